"""Face detection, square crops with a margin, and IoU tracking across sampled frames.

Used by ingest (live and file), ``forensics scan`` and the trainer's crop cache, so training
and serving crop faces the same way.

Detectors: ``haar`` (OpenCV's frontal-face cascade, run on a copy downscaled to
``detect_width``), ``onnx`` (any model ``cv2.FaceDetectorYN`` loads, e.g. YuNet, by path), and
``none`` (the whole frame is the "crop").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from forensics.config import FaceSettings
from forensics.errors import ConfigError

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in full-resolution pixels, x1/y1 exclusive


@dataclass
class Crop:
    image: np.ndarray  # uint8 [S, S, 3] RGB
    box: list[int]  # the detected face, [x0, y0, x1, y1] in source pixels
    track: int | None  # face track id within the source, None for whole frames
    region: list[int]  # the square actually cropped, [x0, y0, x1, y1] (margin added, clamped)


class FaceDetector(Protocol):
    def detect(self, rgb_or_gray_small: np.ndarray, scale: float) -> list[Box]:
        """Boxes in full-resolution pixels, given the downscaled image and full/small scale."""


class HaarDetector:
    """OpenCV Haar frontal-face cascade. Input: grayscale uint8 [h, w] (already downscaled)."""

    wants_gray = True

    def __init__(self, min_face: int = 40):
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise ConfigError(f"cannot load the Haar cascade {path}: reinstall opencv-python-headless<5")
        self.min_face = min_face

    def detect(self, small: np.ndarray, scale: float) -> list[Box]:
        min_side = max(12, int(round(self.min_face / scale)))
        found = self.cascade.detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
        return [_scale_box(x, y, w, h, scale) for x, y, w, h in (found if len(found) else [])]


class OnnxFaceDetector:
    """A face-detection ONNX model run by ``cv2.FaceDetectorYN`` (YuNet's format). Input: BGR small."""

    wants_gray = False

    def __init__(self, model_path: Path | None, score_threshold: float = 0.7):
        if model_path is None:
            raise ConfigError("faces.detector=onnx needs faces.onnx_model: the path of a YuNet-style .onnx file")
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ConfigError(f"face model {model_path} does not exist (faces.onnx_model)")
        try:
            self.net = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), score_threshold, 0.3, 50)
        except cv2.error as err:
            raise ConfigError(f"face model {model_path} cannot be loaded by cv2.FaceDetectorYN: {err}") from None
        self._size: tuple[int, int] | None = None

    def detect(self, small: np.ndarray, scale: float) -> list[Box]:
        h, w = small.shape[:2]
        if self._size != (w, h):
            self.net.setInputSize((w, h))
            self._size = (w, h)
        _, faces = self.net.detect(small)
        if faces is None:
            return []
        return [_scale_box(*f[:4], scale) for f in faces]


def _scale_box(x: float, y: float, w: float, h: float, scale: float) -> Box:
    return (int(round(x * scale)), int(round(y * scale)), int(round((x + w) * scale)), int(round((y + h) * scale)))


def square_region(box: Box, frame_w: int, frame_h: int, margin: float) -> Box:
    """The square around ``box`` with ``margin`` x side added on each side, moved inside the frame.

    The square keeps its side when it can be shifted inside the frame, and shrinks to the
    frame's shorter side otherwise.
    """
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    side = int(round(min(side, frame_w, frame_h)))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    sx = int(round(cx - side / 2))
    sy = int(round(cy - side / 2))
    sx = min(max(sx, 0), frame_w - side)
    sy = min(max(sy, 0), frame_h - side)
    return (sx, sy, sx + side, sy + side)


def iou(a: Box | list[int], b: Box | list[int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class IouTracker:
    """Greedy IoU matching of this frame's boxes to the last box of each live track."""

    def __init__(self, iou_match: float = 0.3, max_missed: int = 5):
        self.iou_match = iou_match
        self.max_missed = max_missed
        self.reset()

    def reset(self) -> None:
        self._tracks: dict[int, tuple[Box, int]] = {}  # id -> (last box, frames missed)
        self._next_id = 0

    def assign(self, boxes: list[Box]) -> list[int]:
        pairs = sorted(
            ((iou(b, tb), i, tid) for i, b in enumerate(boxes) for tid, (tb, _) in self._tracks.items()),
            reverse=True,
        )
        ids: list[int | None] = [None] * len(boxes)
        used: set[int] = set()
        for score, i, tid in pairs:
            if score < self.iou_match:
                break
            if ids[i] is None and tid not in used:
                ids[i] = tid
                used.add(tid)
        for i, tid in enumerate(ids):
            if tid is None:
                ids[i] = tid = self._next_id
                self._next_id += 1
            self._tracks[tid] = (boxes[i], -1)
        for tid, (tb, missed) in list(self._tracks.items()):
            missed += 1
            if missed > self.max_missed:
                del self._tracks[tid]
            else:
                self._tracks[tid] = (tb, missed)
        return [int(t) for t in ids]  # type: ignore[arg-type]


class FaceCropper:
    """Frames in, square face crops (with track ids) out. One instance per source."""

    def __init__(self, settings: FaceSettings, size: int, detector: FaceDetector | None):
        self.settings = settings
        self.size = size
        self.detector = detector
        self.tracker = IouTracker(settings.iou_match)

    def reset(self) -> None:
        """Forget tracks: call at the start of each file."""
        self.tracker.reset()

    def crops(self, decoded) -> list[Crop]:
        """Crops of one decoded PyAV frame (a ``forensics.video.DecodedFrame``)."""
        frame = decoded.frame
        w, h = frame.width, frame.height
        if self.detector is None:
            return [Crop(decoded.rgb(self.size, self.size), [0, 0, w, h], None, [0, 0, w, h])]
        sw, sh, scale = self._small_size(w, h)
        fmt = "gray" if self.detector.wants_gray else "bgr24"
        small = frame.reformat(width=sw, height=sh, format=fmt).to_ndarray()
        boxes = self._pick(self.detector.detect(small, scale))
        if not boxes:
            return []
        return self._cut(frame.to_ndarray(format="rgb24"), boxes)

    def crops_rgb(self, rgb: np.ndarray) -> list[Crop]:
        """Crops of one uint8 [H, W, 3] RGB frame (the trainer's and tests' entry point)."""
        h, w = rgb.shape[:2]
        if self.detector is None:
            img = cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_AREA)
            return [Crop(img, [0, 0, w, h], None, [0, 0, w, h])]
        sw, sh, scale = self._small_size(w, h)
        small = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA) if (sw, sh) != (w, h) else rgb
        small = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY if self.detector.wants_gray else cv2.COLOR_RGB2BGR)
        boxes = self._pick(self.detector.detect(small, scale))
        return self._cut(rgb, boxes) if boxes else []

    def _small_size(self, w: int, h: int) -> tuple[int, int, float]:
        dw = min(self.settings.detect_width, w)
        scale = w / dw
        return dw, max(1, int(round(h / scale))), scale

    def _pick(self, boxes: list[Box]) -> list[Box]:
        # Largest faces first: with a cap on faces per frame, the main subject wins.
        boxes = sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
        return boxes[: self.settings.max_faces]

    def _cut(self, rgb: np.ndarray, boxes: list[Box]) -> list[Crop]:
        h, w = rgb.shape[:2]
        tracks = self.tracker.assign(boxes)
        out = []
        for box, track in zip(boxes, tracks):
            x0, y0, x1, y1 = square_region(box, w, h, self.settings.margin)
            patch = rgb[y0:y1, x0:x1]
            interp = cv2.INTER_AREA if patch.shape[0] > self.size else cv2.INTER_LINEAR
            img = cv2.resize(patch, (self.size, self.size), interpolation=interp)
            box_clamped = [max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3])]
            out.append(Crop(img, box_clamped, track, [x0, y0, x1, y1]))
        return out


def build_detector(settings: FaceSettings) -> FaceDetector | None:
    if settings.detector == "haar":
        return HaarDetector(settings.min_face)
    if settings.detector == "onnx":
        return OnnxFaceDetector(settings.onnx_model)
    return None


def build_cropper(settings: FaceSettings, size: int) -> FaceCropper:
    """The cropper the settings ask for; raises ConfigError if its detector cannot load."""
    return FaceCropper(settings, size, build_detector(settings))
