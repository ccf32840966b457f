"""What a face detector returns (``Face``), and the two OpenCV detectors: Haar and YuNet.

Every detector takes a downscaled copy of the frame plus the full/small scale and returns faces
in full-resolution frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from forensics.errors import ConfigError

# The five landmarks every detector with landmarks gives, in this order (InsightFace/ArcFace's
# convention; "right" is the person's right, which is on the image's left in a frontal view).
LANDMARK_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_right", "mouth_left")


@dataclass
class Face:
    """One detected face, in full-resolution frame pixels.

    box: float32 [4] (x0, y0, x1, y1); score: detector confidence in [0, 1] (1.0 for Haar);
    landmarks: float32 [5, 2] (x, y) in LANDMARK_NAMES order, or None when the detector has none;
    keypoints: the detector's own points, float32 [K, 2] (BlazeFace: right eye, left eye, nose tip,
    mouth centre, right ear, left ear), or None; mesh: float32 [468, 2] MediaPipe face-mesh points
    when the landmark model ran, else None.
    """

    box: np.ndarray
    score: float = 1.0
    landmarks: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    mesh: np.ndarray | None = None

    def int_box(self) -> tuple[int, int, int, int]:
        return tuple(round(float(v)) for v in self.box)  # type: ignore[return-value]

    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


class FaceDetector(Protocol):
    # "gray", "bgr" or "rgb": what detect() wants; fit: the longest side detect() wants (None: the
    # cropper's detect_width sets the width).
    colour: str
    fit: int | None

    def detect(self, small: np.ndarray, scale: float) -> list[Face]:
        """Faces in full-resolution pixels, given uint8 ``small`` (the downscaled frame) and full/small scale."""


class HaarDetector:
    """OpenCV Haar frontal-face cascade. Input: grayscale uint8 [h, w] (already downscaled). No landmarks."""

    colour = "gray"
    fit = None

    def __init__(self, min_face: int = 40):
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise ConfigError(f"cannot load the Haar cascade {path}: reinstall opencv-python-headless<5")
        self.min_face = min_face

    def detect(self, small: np.ndarray, scale: float) -> list[Face]:
        min_side = max(12, round(self.min_face / scale))
        found = self.cascade.detectMultiScale(
            small, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side)
        )
        return [
            Face(np.array([x, y, x + w, y + h], np.float32) * scale)
            for x, y, w, h in (found if len(found) else [])
        ]


class OnnxFaceDetector:
    """A YuNet-style ONNX model run by ``cv2.FaceDetectorYN``. Input: BGR small. Five landmarks."""

    colour = "bgr"
    fit = None

    def __init__(self, model_path: Path | None, score_threshold: float = 0.7):
        if model_path is None:
            raise ConfigError(
                "faces.detector=onnx needs faces.onnx_model: the path of a YuNet-style .onnx file"
            )
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ConfigError(f"face model {model_path} does not exist (faces.onnx_model)")
        try:
            self.net = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), score_threshold, 0.3, 50)
        except cv2.error as err:
            raise ConfigError(
                f"face model {model_path} cannot be loaded by cv2.FaceDetectorYN: {err}"
            ) from None
        self._size: tuple[int, int] | None = None

    def detect(self, small: np.ndarray, scale: float) -> list[Face]:
        h, w = small.shape[:2]
        if self._size != (w, h):
            self.net.setInputSize((w, h))
            self._size = (w, h)
        _, faces = self.net.detect(small)
        if faces is None:
            return []
        out = []
        for f in faces:  # x, y, w, h, right eye, left eye, nose tip, right and left mouth corner, score
            x, y, bw, bh = f[:4]
            marks = (f[4:14].reshape(5, 2) * scale).astype(np.float32)
            out.append(Face(np.array([x, y, x + bw, y + bh], np.float32) * scale, float(f[14]), marks))
        return out
