"""Frames in, square face crops with track ids and landmarks out (one FaceCropper per source).

Detection runs on a downscaled copy (the detector's ``fit`` or ``faces.detect_width``); crops and
landmarks come from the full-resolution frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from forensics.config import FaceSettings
from forensics.faces.detectors import Face, FaceDetector
from forensics.faces.geometry import square_region
from forensics.faces.pixels import FramePixels, RgbPixels
from forensics.faces.tracking import FaceTracker, appearance

_FROM_RGB = {"gray": cv2.COLOR_RGB2GRAY, "bgr": cv2.COLOR_RGB2BGR}


@dataclass
class Crop:
    image: np.ndarray  # uint8 [S, S, 3] RGB
    box: list[int]  # the detected face, [x0, y0, x1, y1] in source pixels
    track: int | None  # face track id within the source, None for whole frames
    region: list[int]  # the square actually cropped, [x0, y0, x1, y1] (margin added, clamped)
    landmarks: np.ndarray | None = None  # float32 [5, 2] source pixels (LANDMARK_NAMES order), or None
    face: Face | None = None  # the detection itself (score, keypoints, mesh), None for whole frames

    def wire_landmarks(self) -> list[list[float]] | None:
        """The landmarks as the wire carries them: [[x, y], ...] source pixels to 0.01 px, or None."""
        return None if self.landmarks is None else np.round(self.landmarks.astype(np.float64), 2).tolist()


class FaceCropper:
    """Frames in, square face crops (with track ids and landmarks) out. One instance per source.

    ``refiner`` (a FaceMesh) turns each detection's keypoints into the five landmarks. With
    ``settings.redetect_every`` N > 1 and a refiner, the detector runs on at most every N-th
    sampled frame while the faces stay found: in between, the landmark model follows each face
    from its last landmarks (MediaPipe's tracking mode); a lost face, or the N-th frame, brings
    the detector back, so a new face waits at most N-1 samples.
    """

    def __init__(self, settings: FaceSettings, size: int, detector: FaceDetector | None, refiner=None):
        self.settings = settings
        self.size = size
        self.detector = detector
        self.refiner = refiner
        self.tracker = FaceTracker(
            settings.iou_match, settings.max_missed, settings.max_jump, new_score=settings.min_score
        )
        self._followed: list[Face] = []  # last frame's faces, when the landmark model can follow them
        self._since_detect = 0
        self.detections = 0  # detector runs, for benchmarks and metrics

    def reset(self) -> None:
        """Forget tracks: call at the start of each file."""
        self.tracker.reset()
        self._followed = []
        self._since_detect = 0

    def crops(self, decoded) -> list[Crop]:
        """Crops of one decoded PyAV frame (a ``forensics.video.DecodedFrame``)."""
        frame = decoded.frame
        if self.detector is None:
            w, h = frame.width, frame.height
            return [Crop(decoded.rgb(self.size, self.size), [0, 0, w, h], None, [0, 0, w, h])]
        return self._crops(FramePixels(frame))

    def crops_rgb(self, rgb: np.ndarray) -> list[Crop]:
        """Crops of one uint8 [H, W, 3] RGB (or [H, W] grayscale) frame (the trainer's and tests' entry point)."""
        if rgb.ndim == 2:
            rgb = cv2.cvtColor(rgb, cv2.COLOR_GRAY2RGB)
        if self.detector is None:
            h, w = rgb.shape[:2]
            img = cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_AREA)
            return [Crop(img, [0, 0, w, h], None, [0, 0, w, h])]
        return self._crops(RgbPixels(rgb))

    def _crops(self, pixels: RgbPixels) -> list[Crop]:
        if self._followed and self._since_detect + 1 < self.settings.redetect_every:
            followed = [self.refiner.follow(pixels, f) for f in self._followed]
            if all(f is not None for f in followed):
                self._since_detect += 1
                return self._cut(pixels, followed, refined=True)  # type: ignore[arg-type]
        self._since_detect = 0
        self.detections += 1
        sw, sh, scale = self._small_size(pixels.width, pixels.height)
        small = pixels.small(sw, sh)
        if self.detector.colour in _FROM_RGB:
            small = cv2.cvtColor(small, _FROM_RGB[self.detector.colour])
        faces = self._pick(self.detector.detect(np.ascontiguousarray(small), scale))
        if not faces:
            self._followed = []
            return []
        return self._cut(pixels, faces)

    def _small_size(self, w: int, h: int) -> tuple[int, int, float]:
        fit = self.detector.fit if self.detector is not None else None
        if fit is not None:  # longest side to the detector's input side, never upscaled
            scale = max(1.0, max(w, h) / fit)
            return max(1, round(w / scale)), max(1, round(h / scale)), scale
        dw = min(self.settings.detect_width, w)
        scale = w / dw
        return dw, max(1, round(h / scale)), scale

    def _pick(self, faces: list[Face]) -> list[Face]:
        # Largest faces first: with a cap on faces per frame, the main subject wins.
        faces = sorted(faces, key=Face.area, reverse=True)
        return [f for f in faces if f.area() >= 1.0][: self.settings.max_faces]

    def _cut(self, pixels: RgbPixels, faces: list[Face], refined: bool = False) -> list[Crop]:
        w, h = pixels.width, pixels.height
        if self.refiner is not None and not refined:
            faces = [self.refiner.refine(pixels, f) for f in faces]
        out = []
        for face in faces:
            box = face.int_box()
            x0, y0, x1, y1 = square_region(box, w, h, self.settings.margin)
            patch = pixels.region(x0, y0, x1, y1)
            interp = cv2.INTER_AREA if patch.shape[0] > self.size else cv2.INTER_LINEAR
            img = cv2.resize(patch, (self.size, self.size), interpolation=interp)
            box_clamped = [max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3])]
            out.append(Crop(img, box_clamped, None, [x0, y0, x1, y1], face.landmarks, face))
        tracks = self.tracker.assign(
            [f.box for f in faces], [f.score for f in faces], [f.landmarks for f in faces],
            [appearance(c.image) for c in out],
        )  # fmt: skip
        for crop, track in zip(out, tracks):
            crop.track = track
        # A low-score detection that continues no track is not a face we keep (ByteTrack's rule).
        kept = [c for c in out if c.track is not None]
        can_follow = self.refiner is not None and self.settings.redetect_every > 1
        self._followed = [c.face for c in kept if c.face.mesh is not None] if can_follow else []  # type: ignore[union-attr]
        if len(self._followed) != len(kept):
            self._followed = []
        return kept
