"""SSD anchors, box decoding and weighted NMS for MediaPipe's BlazeFace models (numpy only).

Ported from MediaPipe's calculators (Apache-2.0):
``mediapipe/calculators/tflite/ssd_anchors_calculator.cc`` (anchor grid, ``fixed_anchor_size``),
``mediapipe/calculators/tensor/tensors_to_detections_calculator.cc`` (box/keypoint decoding,
sigmoid scores) and ``mediapipe/calculators/util/non_max_suppression_calculator.cc`` (weighted
NMS), with the options of ``mediapipe/modules/face_detection/face_detection_full_range.pbtxt``:
one layer, stride 4, 192x192 input, anchor offset 0.5, no interpolated scale, fixed anchor size.
"""

from __future__ import annotations

import numpy as np


def ssd_anchors(
    input_size: int, strides: list[int], offset: float = 0.5, interpolated: bool = False
) -> np.ndarray:
    """Anchor centres float32 [A, 2] (x, y) in [0, 1], row-major over each layer's grid.

    Layers with the same stride share one grid; each cell gets 1 anchor (2 with the interpolated
    scale), as in SsdAnchorsCalculator with fixed_anchor_size and aspect ratio 1.
    """
    anchors = []
    layer = 0
    while layer < len(strides):
        repeats = 0
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            repeats += 2 if interpolated else 1
            last += 1
        side = int(np.ceil(input_size / strides[layer]))
        ys, xs = np.meshgrid(
            (np.arange(side) + offset) / side, (np.arange(side) + offset) / side, indexing="ij"
        )
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        anchors.append(np.repeat(grid, repeats, axis=0))
        layer = last
    return np.concatenate(anchors).astype(np.float32)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, input_size: int,
           min_score: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Boxes+keypoints float32 [N, 2 + K, 2] in [0, 1] of the input, and scores float32 [N], above min_score.

    raw_boxes [A, 4 + 2K] holds (cx, cy, w, h, kx0, ky0, ...) in input pixels relative to the
    anchor; the result's rows are (x0, y0), (x1, y1), then the K keypoints.
    """
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(-1), -80.0, 80.0)))
    keep = np.flatnonzero(scores >= min_score)
    if keep.size == 0:
        return np.zeros((0, 2, 2), np.float32), np.zeros(0, np.float32)
    pts = raw_boxes[keep].reshape(keep.size, -1, 2) / input_size
    a = anchors[keep][:, None, :]
    centre = pts[:, :1] + a
    half = pts[:, 1:2] / 2
    out = np.concatenate([centre - half, centre + half, pts[:, 2:] + a], axis=1)
    valid = np.all(out[:, 1] > out[:, 0], axis=1)
    return out[valid].astype(np.float32), scores[keep][valid].astype(np.float32)


def weighted_nms(
    dets: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's weighted NMS: each kept detection is the score-weighted mean of those overlapping it.

    dets float32 [N, 2 + K, 2] (box corners then keypoints), scores [N]. Returns the merged
    detections and the score of each cluster's best member, best first.
    """
    order = np.argsort(-scores)
    out_d, out_s = [], []
    while order.size:
        top = order[0]
        boxes = dets[order, :2].reshape(-1, 4)
        b = boxes[0]
        ix = np.clip(np.minimum(boxes[:, 2], b[2]) - np.maximum(boxes[:, 0], b[0]), 0, None)
        iy = np.clip(np.minimum(boxes[:, 3], b[3]) - np.maximum(boxes[:, 1], b[1]), 0, None)
        inter = ix * iy
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        overlap = inter / np.maximum(areas + areas[0] - inter, 1e-12)
        near = overlap > iou_threshold
        near[0] = True
        w = scores[order[near]]
        out_d.append((dets[order[near]] * w[:, None, None]).sum(0) / w.sum())
        out_s.append(scores[top])
        order = order[~near]
    if not out_d:
        return np.zeros((0,) + dets.shape[1:], np.float32), np.zeros(0, np.float32)
    return np.stack(out_d).astype(np.float32), np.array(out_s, np.float32)
