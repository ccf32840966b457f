"""Face tracks across sampled frames: one id per person within one source.

ByteTrack-style association, written here because the maintained packages do not fit the
runtime: norfair pins numpy<2, roboflow's ``trackers`` pulls opencv-python 5 (which clashes with
opencv-python-headless<5) and supervision, boxmot needs torch. What it keeps from ByteTrack
(Zhang et al., 2022): confident detections are matched first; detections below ``new_score``
may only continue an existing track, never start one; tracks coast through misses. Each track
predicts its box with a constant-velocity step (an exponential average of its centre motion),
and a detection may continue a track when it overlaps the prediction (IoU) OR lies within
``max_jump`` face sizes of it (landmarks when both have them, else box centres) with a similar
size: at 2 fps a head moves more than its own width between samples often enough that IoU
alone splits tracks. Among candidates the cost adds appearance (colour-histogram distance of the
crops), which keeps two faces that cross apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from forensics.faces.geometry import iou


@dataclass
class _Track:
    id: int
    box: np.ndarray  # float64 [4], last matched or predicted
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # centre pixels per sample
    landmarks: np.ndarray | None = None
    appearance: np.ndarray | None = None
    missed: int = 0

    def predicted(self) -> np.ndarray:
        step = self.velocity * (self.missed + 1)
        return self.box + np.concatenate([step, step])


def appearance(image: np.ndarray) -> np.ndarray:
    """Colour descriptor of a face crop: normalised 4x4x4 RGB histogram of its central half, float32 [64]."""
    h, w = image.shape[:2]
    centre = np.ascontiguousarray(image[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4])
    hist = cv2.calcHist([centre], [0, 1, 2], None, [4, 4, 4], [0, 256, 0, 256, 0, 256]).ravel()
    return (hist / max(1.0, hist.sum())).astype(np.float32)


class FaceTracker:
    """Assigns a track id to each face of a frame; ids are stable while a person stays in view.

    iou_match: IoU with the predicted box that continues a track on its own; max_jump: largest
    move (in face sizes) between samples that still continues a track; max_missed: samples a track
    coasts without a detection before it ends; new_score: lowest detector score that starts a track.
    """

    def __init__(
        self, iou_match: float = 0.3, max_missed: int = 5, max_jump: float = 1.0, new_score: float = 0.5
    ):
        self.iou_match = iou_match
        self.max_missed = max_missed
        self.max_jump = max_jump
        self.new_score = new_score
        self.reset()

    def reset(self) -> None:
        self._tracks: list[_Track] = []
        self._next_id = 0

    def assign(
        self,
        boxes: Sequence[Sequence[float]],
        scores: Sequence[float] | None = None,
        landmarks: Sequence[np.ndarray | None] | None = None,
        appearances: Sequence[np.ndarray | None] | None = None,
    ) -> list[int | None]:
        """Track id per box (x0, y0, x1, y1 pixels); None for a low-score box that continues no track."""
        n = len(boxes)
        dets = [np.asarray(b, np.float64) for b in boxes]
        scores = list(scores) if scores is not None else [1.0] * n
        landmarks = list(landmarks) if landmarks is not None else [None] * n
        appearances = list(appearances) if appearances is not None else [None] * n
        ids: list[int | None] = [None] * n
        free_tracks = set(range(len(self._tracks)))
        # Stage 1: confident detections; stage 2: the rest may continue what is left (ByteTrack).
        for stage in (True, False):
            pairs = []
            for i in range(n):
                if ids[i] is not None or (scores[i] >= self.new_score) != stage:
                    continue
                for k in free_tracks:
                    cost = self._cost(self._tracks[k], dets[i], landmarks[i], appearances[i])
                    if cost is not None:
                        pairs.append((cost, i, k))
            for _cost, i, k in sorted(pairs):
                if ids[i] is None and k in free_tracks:
                    free_tracks.discard(k)
                    ids[i] = self._tracks[k].id
                    self._update(self._tracks[k], dets[i], landmarks[i], appearances[i])
        for i in range(n):
            if ids[i] is None and scores[i] >= self.new_score:
                ids[i] = self._next_id
                self._tracks.append(
                    _Track(self._next_id, dets[i], landmarks=landmarks[i], appearance=appearances[i])
                )
                self._next_id += 1
        matched = {t for t in ids if t is not None}
        for t in self._tracks:
            if t.id not in matched:
                t.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= self.max_missed]
        return ids

    def _cost(
        self, t: _Track, box: np.ndarray, marks: np.ndarray | None, app: np.ndarray | None
    ) -> float | None:
        """Lower is a better match; None when the detection cannot continue the track."""
        pred = t.predicted()
        overlap = iou(pred, box)
        size = float(np.sqrt(max(1.0, (pred[2] - pred[0]) * (pred[3] - pred[1]))))
        det_size = float(np.sqrt(max(1.0, (box[2] - box[0]) * (box[3] - box[1]))))
        if marks is not None and t.landmarks is not None:
            shift = t.velocity * (t.missed + 1)
            dist = float(np.mean(np.linalg.norm(np.asarray(marks) - (t.landmarks + shift), axis=1))) / size
        else:
            dist = float(np.linalg.norm((box[:2] + box[2:]) / 2 - (pred[:2] + pred[2:]) / 2)) / size
        ratio = det_size / size
        if overlap < self.iou_match and not (dist <= self.max_jump and 0.5 <= ratio <= 2.0):
            return None
        cost = (1.0 - overlap) + min(dist, 2.0)
        if app is not None and t.appearance is not None:
            cost += 2.0 * (1.0 - float(np.minimum(app, t.appearance).sum()))  # histogram intersection
        return cost

    def _update(self, t: _Track, box: np.ndarray, marks: np.ndarray | None, app: np.ndarray | None) -> None:
        moved = ((box[:2] + box[2:]) / 2 - (t.box[:2] + t.box[2:]) / 2) / (t.missed + 1)
        t.velocity = 0.5 * t.velocity + 0.5 * moved
        t.box = box
        t.landmarks = None if marks is None else np.asarray(marks, np.float64)
        if app is not None:
            t.appearance = app if t.appearance is None else 0.7 * t.appearance + 0.3 * app
        t.missed = 0
