"""Self-blended fakes (trainer/sbi.py) on a generated face: mask, blend, determinism, crops without landmarks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from trainer.data import FACE_OVAL, REAL, CropSet, Video
from trainer.sbi import blend_seed, hull_mask, mask_bound, self_blend, self_blended_dataset, self_blended_set

SIZE = 128


@pytest.fixture(scope="module")
def face():
    """The astronaut's face as a 128 px crop, with its five landmarks and face-mesh oval found by BlazeFace."""
    from forensics.faces import detect_faces
    from forensics.faces.geometry import square_region

    rgb = skdata.astronaut()
    f = detect_faces(rgb)[0]
    x0, y0, x1, y1 = square_region(f.int_box(), rgb.shape[1], rgb.shape[0], 1 / 3)
    scale = SIZE / (x1 - x0)
    crop = cv2.resize(rgb[y0:y1, x0:x1], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    to_crop = lambda p: ((np.asarray(p, np.float32) - [x0, y0]) * scale).astype(np.float32)
    return crop, to_crop(f.landmarks), to_crop(f.mesh[list(FACE_OVAL)])


@pytest.mark.parametrize("points", ["landmarks", "outline"])
def test_mask_lies_inside_the_dilated_face_hull_and_the_blend_changes_only_inside_it(face, points):
    image, landmarks, outline = face
    pts = landmarks if points == "landmarks" else outline
    changed_any = 0
    for seed in range(12):
        fake, mask = self_blend(image, pts, seed)
        assert fake.shape == image.shape and fake.dtype == np.uint8
        assert mask.shape == (SIZE, SIZE) and 0 <= mask.min() and mask.max() <= 1
        assert not mask[mask_bound(pts, SIZE) == 0].any()  # never outside the (scaled, dilated) hull
        assert np.array_equal(fake[mask == 0], image[mask == 0])  # untouched outside the mask
        # The mask covers a real part of the face: at least half of the unscaled hull's area.
        assert (mask > 0).sum() > 0.5 * hull_mask(pts, SIZE).sum()
        changed_any += int((fake != image).any(axis=2).sum())
    assert changed_any > 0.05 * SIZE * SIZE  # the blends really change the face


def test_blend_is_deterministic_per_seed(face):
    image, _, outline = face
    a, ma = self_blend(image, outline, 7)
    b, mb = self_blend(image, outline, 7)
    c, _ = self_blend(image, outline, 8)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(a, c)
    assert blend_seed(0, 1, 2) == blend_seed(0, 1, 2) != blend_seed(0, 2, 1)


def test_crops_without_landmarks_are_counted_not_blended(face):
    image, landmarks, _ = face
    assert self_blend(image, None, 0) is None
    assert self_blend(image, np.full((5, 2), np.nan, np.float32), 0) is None
    assert self_blend(image, landmarks[:2], 0) is None  # two points outline nothing
    n = 4
    videos = [Video(Path(f"v{i}.mp4"), REAL, f"v{i}") for i in range(2)]
    lm = np.repeat(landmarks[None], n, 0)
    lm[2:] = np.nan  # the second video's crops have no landmarks
    crops = CropSet(np.repeat(image[None], n, 0), np.zeros(n, np.int64), np.array([0, 0, 1, 1]), np.arange(n),
                    videos, landmarks=lm)  # fmt: skip
    both, stats = self_blended_set(crops, seed=0)
    assert stats.blended == 2 and stats.no_landmarks == 2
    assert len(both) == 6 and (both.labels == 1).sum() == 2
    assert [v.name for v in both.videos] == ["v0.mp4", "v1.mp4", "v0.mp4#sbi"]
    ds = self_blended_dataset(crops, lambda x: x, seed=0)
    assert len(ds) == 6 and ds.stats.no_landmarks == 2
    x, y = ds[5]
    assert y.item() == 1.0 and x.shape == (3, SIZE, SIZE)
