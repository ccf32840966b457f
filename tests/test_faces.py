"""Face detection, crop geometry and tracking on real face imagery a package ships."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data as skdata

from forensics.config import FaceSettings
from forensics.errors import ConfigError
from forensics.faces import FaceCropper, FaceTracker, HaarDetector, build_cropper, iou, square_region


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()  # 512x512 RGB, one real face


def test_haar_finds_the_astronauts_face(astronaut):
    crops = build_cropper(FaceSettings(detector="haar", detect_width=256), 64).crops_rgb(astronaut)
    assert len(crops) == 1
    x0, y0, x1, y1 = crops[0].box
    # The face is at roughly x 170-280, y 60-190 in this image.
    assert 140 < x0 < 200 and 250 < x1 < 310 and 40 < y0 < 110 and 160 < y1 < 220
    assert crops[0].image.shape == (64, 64, 3) and crops[0].image.dtype == np.uint8


def test_detection_on_a_downscaled_copy_maps_boxes_back_to_full_resolution(astronaut):
    big = np.kron(astronaut, np.ones((2, 2, 1), np.uint8))  # 1024x1024
    small_box = build_cropper(FaceSettings(detector="haar", detect_width=512), 64).crops_rgb(astronaut)[0].box
    big_box = build_cropper(FaceSettings(detector="haar", detect_width=512), 64).crops_rgb(big)[0].box
    assert np.allclose(np.array(big_box), 2 * np.array(small_box), atol=12)


def test_square_crop_adds_a_third_of_the_box_on_each_side():
    assert square_region((100, 100, 160, 160), 1000, 1000, 1 / 3) == (80, 80, 180, 180)
    # A non-square box gives a square on its longer side, centred.
    x0, y0, x1, y1 = square_region((100, 100, 130, 190), 1000, 1000, 0.5)
    assert x1 - x0 == y1 - y0 == 180 and (x0 + x1) / 2 == 115 and (y0 + y1) / 2 == 145


def test_square_crop_is_moved_inside_the_frame_and_shrunk_when_too_big():
    assert square_region((0, 0, 60, 60), 640, 480, 1 / 3) == (0, 0, 100, 100)
    assert square_region((600, 440, 640, 480), 640, 480, 0.5) == (560, 400, 640, 480)
    x0, y0, x1, y1 = square_region((0, 0, 600, 470), 640, 480, 1 / 3)
    assert (x1 - x0, y1 - y0) == (480, 480) and 0 <= x0 and x1 <= 640 and y0 == 0


def test_tracker_keeps_ids_for_moving_faces_and_starts_new_ones():
    t = FaceTracker(iou_match=0.3)
    assert t.assign([(0, 0, 50, 50), (200, 200, 260, 260)]) == [0, 1]
    assert t.assign([(205, 205, 265, 265), (5, 3, 55, 53)]) == [1, 0]
    assert t.assign([(400, 0, 450, 50)]) == [2]
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)


def test_biggest_faces_win_under_the_cap(astronaut):
    canvas = np.full((600, 1200, 3), 90, np.uint8)
    canvas[40:552, 640:1152] = astronaut
    small = astronaut[::2, ::2]
    canvas[150:406, 40:296] = small
    both = FaceCropper(FaceSettings(max_faces=4, detect_width=1200), 64, HaarDetector(40)).crops_rgb(canvas)
    one = FaceCropper(FaceSettings(max_faces=1, detect_width=1200), 64, HaarDetector(40)).crops_rgb(canvas)
    assert len(both) == 2
    assert len(one) == 1 and one[0].box[0] > 640  # the big face


def test_no_face_gives_no_crops_and_detector_none_gives_the_whole_frame():
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert build_cropper(FaceSettings(), 64).crops_rgb(noise) == []
    whole = build_cropper(FaceSettings(detector="none"), 64).crops_rgb(noise)
    assert len(whole) == 1 and whole[0].box == [0, 0, 320, 240] and whole[0].track is None


def test_onnx_detector_without_a_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="needs faces.onnx_model"):
        build_cropper(FaceSettings(detector="onnx"), 64)
    with pytest.raises(ConfigError, match="does not exist"):
        build_cropper(FaceSettings(detector="onnx", onnx_model=tmp_path / "yunet.onnx"), 64)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        build_cropper(FaceSettings(detector="onnx", onnx_model=bad), 64)
