"""One track per person: generated clips of the astronaut's face moving, turning, hidden, crossing another."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from forensics.config import FaceSettings
from forensics.faces import FaceTracker, build_cropper

HEAD = skdata.astronaut()[30:250, 120:340]  # 220x220, the face about 110 px wide


def _paste(canvas: np.ndarray, img: np.ndarray, x: int, y: int) -> None:
    h, w = img.shape[:2]
    canvas[y : y + h, x : x + w] = img


def _turned(img: np.ndarray, angle: float, squash: float) -> np.ndarray:
    """The head rotated in plane by ``angle`` degrees and narrowed to ``squash`` of its width (a turn)."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    rot = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(rot, (max(8, int(w * squash)), h))


@pytest.fixture()
def cropper():
    return build_cropper(FaceSettings(), 64)


def test_one_face_that_moves_turns_jumps_and_hides_keeps_one_track(cropper):
    rng = np.random.default_rng(1)
    ids, found, hidden = [], 0, set(range(14, 17))
    x = 60
    for i in range(40):  # 40 sampled frames (20 s at 2 fps)
        canvas = np.full((720, 1280, 3), (70, 80, 60), np.uint8)
        x += 20 + int(rng.integers(-8, 8)) + (80 if i == 25 else 0)  # a small jump at frame 25
        angle = 20 * np.sin(i / 4)
        squash = 0.65 if 30 <= i < 34 else 1.0  # turned away for four samples
        head = _turned(HEAD, angle, squash)
        y = 200 + int(30 * np.sin(i / 3))
        _paste(canvas, head, x, y)
        if i in hidden:  # a hand in front of the face
            canvas[y - 10 : y + 240, (x) - 10 : (x) + 240] = (150, 120, 100)
        crops = cropper.crops_rgb(canvas)
        assert len(crops) <= 1
        if i in hidden:
            assert crops == []
        found += len(crops)
        ids += [c.track for c in crops]
    assert found >= 34  # seen in nearly every visible sample (37 visible)
    assert set(ids) == {0}  # and always as the same person


def test_two_faces_that_cross_keep_two_tracks(cropper):
    other = (HEAD[:, ::-1] * np.float32([0.75, 0.8, 1.0])).astype(np.uint8)  # a second, paler person
    per_face: dict[str, list] = {"a": [], "b": []}
    for i in range(21):
        canvas = np.full((540, 960, 3), 50, np.uint8)
        xa, xb = 20 + 35 * i, 720 - 35 * i
        _paste(canvas, other, xb, 240)
        _paste(canvas, HEAD, xa, 80)  # a walks in front of b, a little higher up
        for c in cropper.crops_rgb(canvas):
            who = "a" if (c.box[1] + c.box[3]) / 2 < 80 + 110 + 80 else "b"
            per_face[who].append(c.track)
    assert len(per_face["a"]) >= 18 and len(per_face["b"]) >= 12  # both seen before and after crossing
    assert (
        len(set(per_face["a"])) == 1 and len(set(per_face["b"])) == 1 and per_face["a"][0] != per_face["b"][0]
    )


def test_low_score_detections_only_continue_tracks():
    t = FaceTracker(new_score=0.5)
    assert t.assign([(0, 0, 100, 100)], scores=[0.4]) == [None]  # too weak to start a track
    assert t.assign([(0, 0, 100, 100)], scores=[0.9]) == [0]
    assert t.assign([(10, 5, 110, 105)], scores=[0.35]) == [0]  # weak, but continues the track


def test_tracks_coast_through_misses_then_end():
    t = FaceTracker(max_missed=3)
    assert t.assign([(0, 0, 100, 100)]) == [0]
    assert t.assign([(40, 0, 140, 100)]) == [0]  # moving right 40 px per sample
    for _ in range(3):
        assert t.assign([]) == []
    assert t.assign([(200, 0, 300, 100)]) == [0]  # where the motion predicts it, after 3 misses
    for _ in range(4):
        t.assign([])
    assert t.assign([(200, 0, 300, 100)]) == [1]  # gone too long: a new track


def test_between_detections_the_landmark_model_follows_the_face():
    cropper = build_cropper(FaceSettings(redetect_every=4), 64)
    boxes, tracks = [], []
    for i in range(12):
        canvas = np.full((540, 960, 3), 60, np.uint8)
        _paste(canvas, HEAD, 100 + 30 * i, 120 + 5 * i)
        (crop,) = cropper.crops_rgb(canvas)
        boxes.append(crop.box)
        tracks.append(crop.track)
        lm = crop.landmarks
        assert lm[0][0] < lm[2][0] < lm[1][0] and max(lm[0][1], lm[1][1]) < lm[2][1] < min(lm[3][1], lm[4][1])
    assert cropper.detections == 3 and set(tracks) == {0}  # detector on samples 0, 4, 8 only
    dx = np.diff([b[0] for b in boxes])
    assert np.all(np.abs(dx - 30) < 12)  # followed boxes move with the face, no jumps at re-detection
    sizes = [b[2] - b[0] for b in boxes]
    assert max(sizes) - min(sizes) < 0.15 * np.mean(sizes)
