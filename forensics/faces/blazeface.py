"""MediaPipe BlazeFace (full range) and the 468-point face mesh, run by LiteRT without TensorFlow.

The detector sees the frame letterboxed into 192x192 (``fit``), so the cropper hands it a copy
whose longest side is 192 and crops from the full frame. The mesh refines each detection to the
five alignment landmarks (eye centres, nose tip, mouth corners) on a rotated 192x192 crop of the
FULL-resolution frame, following MediaPipe's face_landmark_front graph (ROI = detection box,
square on its long side, x1.5, rotated so the eyes are level).
"""

from __future__ import annotations

import cv2
import numpy as np

from forensics.errors import ModelError
from forensics.faces.ssd import decode, ssd_anchors, weighted_nms
from forensics.faces.detectors import Face
from forensics.faces.model_files import litert_interpreter, packaged_model
from forensics.faces.pixels import RgbPixels

DETECTOR_FILE = "face_detection_full_range.tflite"
MESH_FILE = "face_landmark.tflite"
_SIZE = 192  # both models' input side
# Mesh indices of the five landmarks: right-eye corners 33/133, left-eye corners 362/263,
# nose tip 1, mouth corners 61 (person's right) and 291 (person's left).
_EYE_R, _EYE_L, _NOSE, _MOUTH_R, _MOUTH_L = (33, 133), (362, 263), 1, 61, 291


class BlazeFaceDetector:
    """BlazeFace full range: faces with score, box and six keypoints. Input: RGB uint8, longest side 192."""

    colour = "rgb"
    fit = _SIZE

    def __init__(self, min_score: float = 0.5, nms_iou: float = 0.3, threads: int = 1):
        self.interp = litert_interpreter(packaged_model(DETECTOR_FILE), threads)
        inp, outs = self.interp.get_input_details()[0], self.interp.get_output_details()
        if tuple(inp["shape"]) != (1, _SIZE, _SIZE, 3) or len(outs) != 2:
            raise ModelError(
                f"{DETECTOR_FILE} has input {list(inp['shape'])}, not [1, 192, 192, 3]: reinstall it"
            )
        self._in = inp["index"]
        # The regressor output is [1, 2304, 16], the classifier [1, 2304, 1]; order them by shape.
        outs = sorted(outs, key=lambda d: -int(d["shape"][-1]))
        self._boxes, self._scores = outs[0]["index"], outs[1]["index"]
        self.anchors = ssd_anchors(_SIZE, [4])
        self.min_score = min_score
        self.nms_iou = nms_iou
        self._canvas = np.zeros((1, _SIZE, _SIZE, 3), np.float32)

    def detect(self, small: np.ndarray, scale: float) -> list[Face]:
        h, w = small.shape[:2]
        s = _SIZE / max(h, w)
        if s != 1.0:
            rw, rh = max(1, round(w * s)), max(1, round(h * s))
            small = cv2.resize(small, (rw, rh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        rh, rw = small.shape[:2]
        px, py = (_SIZE - rw) // 2, (_SIZE - rh) // 2
        canvas = self._canvas
        canvas.fill(-1.0)  # letterbox padding is black in the model's [-1, 1] range
        canvas[0, py : py + rh, px : px + rw] = small.astype(np.float32) * (2.0 / 255.0) - 1.0
        self.interp.set_tensor(self._in, canvas)
        self.interp.invoke()
        raw_boxes = self.interp.get_tensor(self._boxes)[0]
        raw_scores = self.interp.get_tensor(self._scores)[0]
        dets, scores = decode(raw_boxes, raw_scores, self.anchors, _SIZE, self.min_score)
        if len(scores) == 0:
            return []
        dets, scores = weighted_nms(dets, scores, self.nms_iou)
        # input [0, 1] -> small pixels -> full-resolution pixels
        pts = (dets * _SIZE - np.array([px, py], np.float32)) * np.array(
            [scale * w / rw, scale * h / rh], np.float32
        )
        faces = []
        for p, sc in zip(pts.astype(np.float32), scores):
            faces.append(Face(p[:2].reshape(4), float(sc), keypoints=p[2:]))
        return faces


class FaceMesh:
    """MediaPipe's face landmark model: 468 points, and a face-presence score, for one detection."""

    def __init__(self, threads: int = 1, min_presence: float = 0.5):
        self.interp = litert_interpreter(packaged_model(MESH_FILE), threads)
        outs = sorted(self.interp.get_output_details(), key=lambda d: -int(np.prod(d["shape"])))
        self._in = self.interp.get_input_details()[0]["index"]
        self._points, self._flag = outs[0]["index"], outs[1]["index"]
        self.min_presence = min_presence

    def refine(self, pixels: RgbPixels, face: Face) -> Face:
        """``face`` with ``mesh`` and the five ``landmarks`` filled from the full-resolution frame's pixels.

        When the mesh says there is no face in the ROI (presence below ``min_presence``), the
        landmarks come from BlazeFace's keypoints instead (mouth corners estimated from the mouth
        centre and the eye line) and ``mesh`` stays None.
        """
        kp = face.keypoints
        x0, y0, x1, y1 = (float(v) for v in face.box)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        side = max(x1 - x0, y1 - y0) * 1.5
        eyes = kp if kp is not None else face.landmarks
        if eyes is not None:
            dx, dy = eyes[1] - eyes[0]
            angle = float(np.arctan2(dy, dx))  # rotate so the eye line is horizontal
        else:
            angle = 0.0
        c, s = np.cos(angle), np.sin(angle)
        ux, uy = np.array([c, s]) * side / 2, np.array([-s, c]) * side / 2
        centre = np.array([cx, cy])
        src = np.float32([centre - ux - uy, centre + ux - uy, centre - ux + uy])
        dst = np.float32([[0, 0], [_SIZE, 0], [0, _SIZE]])
        m = cv2.getAffineTransform(src, dst)
        # Convert only the ROI's bounding rectangle (inside the frame) to RGB.
        corners = np.vstack([src, centre + ux + uy])
        bx0, by0 = (max(0, int(np.floor(v))) for v in corners.min(0))
        bx1, by1 = (
            min(pixels.width, int(np.ceil(corners[:, 0].max()))),
            min(pixels.height, int(np.ceil(corners[:, 1].max()))),
        )
        if bx1 - bx0 < 2 or by1 - by0 < 2:
            face.landmarks = _landmarks_from_keypoints(kp) if kp is not None else None
            return face
        shifted = m.copy()
        shifted[:, 2] += m[:, :2] @ np.array([bx0, by0], np.float64)
        region = np.ascontiguousarray(pixels.region(bx0, by0, bx1, by1))
        roi = cv2.warpAffine(
            region, shifted, (_SIZE, _SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
        self.interp.set_tensor(self._in, (roi.astype(np.float32) * (1.0 / 255.0))[None])
        self.interp.invoke()
        flag = float(self.interp.get_tensor(self._flag).reshape(-1)[-1])
        presence = 1.0 / (1.0 + np.exp(-np.clip(flag, -80, 80)))
        if presence < self.min_presence:
            face.landmarks = _landmarks_from_keypoints(kp) if kp is not None else None
            return face
        pts = self.interp.get_tensor(self._points).reshape(-1, 3)[:, :2]
        inv = cv2.invertAffineTransform(m)
        mesh = (pts @ inv[:, :2].T + inv[:, 2]).astype(np.float32)
        face.mesh = mesh
        face.landmarks = np.stack([
            mesh[list(_EYE_R)].mean(0), mesh[list(_EYE_L)].mean(0), mesh[_NOSE], mesh[_MOUTH_R], mesh[_MOUTH_L],
        ]).astype(np.float32)  # fmt: skip
        return face

    def follow(self, pixels: RgbPixels, last: Face) -> Face | None:
        """``last`` (a face with a mesh) found again in this frame by the landmark model alone, or None if lost.

        The box moves and scales with the five landmarks (a similarity fit), so it keeps the
        detector's box convention.
        """
        probe = self.refine(pixels, Face(last.box.copy(), last.score, last.landmarks))
        if probe.mesh is None or last.landmarks is None:
            return None
        m, _ = cv2.estimateAffinePartial2D(last.landmarks, probe.landmarks)
        if m is None:
            return None
        scale = float(np.hypot(m[0, 0], m[1, 0]))
        x0, y0, x1, y1 = (float(v) for v in last.box)
        cx, cy = m @ np.array([(x0 + x1) / 2, (y0 + y1) / 2, 1.0])
        hw, hh = (x1 - x0) * scale / 2, (y1 - y0) * scale / 2
        probe.box = np.array([cx - hw, cy - hh, cx + hw, cy + hh], np.float32)
        return probe


def _landmarks_from_keypoints(kp: np.ndarray) -> np.ndarray:
    """Five landmarks from BlazeFace's six keypoints; mouth corners at +-0.4 eye distance along the eye line."""
    eye_r, eye_l, nose, mouth = kp[0], kp[1], kp[2], kp[3]
    half = (eye_l - eye_r) * 0.4
    return np.stack([eye_r, eye_l, nose, mouth - half, mouth + half]).astype(np.float32)
