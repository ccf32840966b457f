"""Self-blended fakes (Shiohara & Yamasaki, CVPR 2022, "Detecting Deepfakes with Self-Blended Images").

A real face crop is blended with a slightly transformed copy of itself inside a soft face mask.
The result has no foreign identity, only the traces every face swap leaves: a blending boundary,
a colour and sharpness mismatch between the inner face and its surroundings, a small misalignment.
A detector trained on real faces against these learns those traces, which generalise across
manipulation methods, and needs no labelled fakes: real footage alone (``forensics train
--real-only``) is enough.

Steps for one crop (uint8 [S,S,3] RGB, landmarks float32 [P,2] in crop pixels, P >= 3):

1. source = a copy changed with torchvision v2 transforms: colour (brightness, contrast,
   saturation, hue), then one of sharpen / blur / down-and-up resize, then a slight affine
   (translation up to 3 %, scale 0.95..1.05);
2. mask = the points' convex hull, scaled about its centre (by 0.85..1.05 for a face outline such as
   the face mesh's oval, by 1.15..1.5 for 5 inner-face landmarks), deformed with ``v2.functional.elastic`` (a smooth random field), blurred with ``v2.GaussianBlur`` and
   scaled by a blend ratio (0.25..1); clipped to the hull at its largest scale, dilated by
   ``MASK_REACH`` x S, so the mask never leaves the face's neighbourhood;
3. fake = target + mask x (source - target), target being the untouched crop: outside the mask
   the fake is the real crop, bit for bit.

Crops without usable landmarks cannot be blended: :func:`self_blend` returns None and callers
count them. Every random choice comes from ``seed``: the same seed gives the same fake.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

HULL_SCALE = (1.15, 1.5)  # for a few inner-face landmarks (eyes, nose, mouth): the hull must grow to cover the face
OUTLINE_SCALE = (0.85, 1.05)  # for a face outline (the face mesh's oval): the hull already is the face
OUTLINE_POINTS = 12  # this many points or more are an outline
MASK_REACH = 0.08  # the mask may leave the scaled hull by at most this share of the crop side
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


def usable_landmarks(landmarks: np.ndarray | None, size: int) -> bool:
    """True when ``landmarks`` (float32 [P,2] crop px) can outline a face: >= 3 finite points spanning an area."""
    if landmarks is None:
        return False
    pts = np.asarray(landmarks, np.float64).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(1)]
    if len(pts) < 3:
        return False
    hull = cv2.convexHull(pts.astype(np.float32))
    return cv2.contourArea(hull) >= (0.02 * size) ** 2


def hull_mask(landmarks: np.ndarray, size: int, scale: float = 1.0, dilate_px: int = 0) -> np.ndarray:
    """float32 [size,size] in {0,1}: the landmarks' convex hull scaled by ``scale`` about its centroid, dilated."""
    pts = np.asarray(landmarks, np.float64).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(1)]
    centre = pts.mean(0)
    pts = centre + (pts - centre) * scale
    hull = cv2.convexHull(np.round(pts * 16).astype(np.int32))
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    if dilate_px > 0:
        k = 2 * dilate_px + 1
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return mask.astype(np.float32)


def scale_range(landmarks: np.ndarray) -> tuple[float, float]:
    """How much the hull of these points is scaled: an outline stays near its size, inner landmarks grow."""
    n = int(np.isfinite(np.asarray(landmarks, np.float64).reshape(-1, 2)).all(1).sum())
    return OUTLINE_SCALE if n >= OUTLINE_POINTS else HULL_SCALE


def mask_bound(landmarks: np.ndarray, size: int) -> np.ndarray:
    """float32 [size,size] in {0,1}: where a self-blend mask may be non-zero (the largest hull, dilated)."""
    return hull_mask(landmarks, size, scale_range(landmarks)[1], int(np.ceil(MASK_REACH * size)))


def _source_transform(size: int, rng: np.random.Generator):
    from torchvision.transforms import v2

    down = max(8, int(size * rng.uniform(0.35, 0.7)))
    quality = v2.RandomChoice([
        v2.RandomAdjustSharpness(sharpness_factor=float(rng.uniform(1.5, 3.0)), p=1.0),
        v2.GaussianBlur(kernel_size=5, sigma=(0.4, 1.2)),
        v2.Compose([v2.Resize(down, antialias=True), v2.Resize(size, antialias=True)]),
    ])  # fmt: skip
    return v2.Compose([
        v2.ColorJitter(brightness=0.15, contrast=0.15, saturation=0.2, hue=0.03),
        quality,
        v2.RandomAffine(degrees=0, translate=(0.03, 0.03), scale=(0.95, 1.05),
                        interpolation=v2.InterpolationMode.BILINEAR),
    ])  # fmt: skip


def _smooth_displacement(size: int, rng: np.random.Generator, reach: float = 0.04):
    """An elastic displacement field for ``v2.functional.elastic``: float32 [1,S,S,2], up to ``reach`` x S pixels.

    Random vectors on a coarse 5x5 grid, upsampled bicubically: as smooth as the Gaussian-filtered
    noise of ``v2.ElasticTransform`` at a fraction of its cost (0.15 s per 256 px mask on one core).
    """
    import torch
    from torch.nn import functional as tf

    coarse = torch.from_numpy(rng.uniform(-1, 1, (1, 2, 5, 5)).astype(np.float32))
    field = tf.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True).clamp_(-1, 1)
    return (field * (2 * reach)).permute(0, 2, 3, 1)  # pixels -> normalized [-1, 1] grid units


def self_blend(image: np.ndarray, landmarks: np.ndarray | None, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A self-blended fake of one crop, or None when the landmarks cannot outline a face.

    image uint8 [S,S,3] RGB; landmarks float32 [P,2] (x, y) in crop pixels. Returns (fake uint8
    [S,S,3], mask float32 [S,S] in [0,1]); ``fake == image`` wherever ``mask == 0``.
    """
    import torch
    from torchvision.transforms import v2

    size = int(image.shape[0])
    if not usable_landmarks(landmarks, size):
        return None
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(2**31)))
        target = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        source = _source_transform(size, rng)(target)
        base = hull_mask(landmarks, size, float(rng.uniform(*scale_range(landmarks))))
        mask = v2.functional.elastic(torch.from_numpy(base)[None], _smooth_displacement(size, rng))
        k = int(rng.choice([5, 9, 13, 17])) * size // 128 | 1
        mask = v2.functional.gaussian_blur(mask, [k, k], [k / 4, k / 4])[0].numpy()
    mask = mask / max(float(mask.max()), 1e-6)
    mask = np.clip(mask, 0, 1) * float(rng.choice(BLEND_RATIOS)) * mask_bound(landmarks, size)
    mask[mask < 1 / 512] = 0.0  # below half a grey level: no change, so "untouched" is exact
    src = source.permute(1, 2, 0).numpy().astype(np.float32)
    tgt = image.astype(np.float32)
    fake = np.rint(tgt + mask[..., None] * (src - tgt)).clip(0, 255).astype(np.uint8)
    fake[mask == 0] = image[mask == 0]
    return fake, mask.astype(np.float32)


def blend_seed(seed: int, *keys: int) -> int:
    """A per-sample seed from a run seed and integers (epoch, crop index): stable across processes."""
    raw = ":".join(str(int(k)) for k in (seed, *keys)).encode()
    return int.from_bytes(hashlib.sha256(raw).digest()[:4], "little")


@dataclass
class BlendStats:
    blended: int = 0
    no_landmarks: int = 0  # crops that could not be blended (counted, never an error)


def blendable(landmarks: np.ndarray | None, n: int, size: int) -> np.ndarray:
    """bool [n]: which crops of a set have usable landmarks (all False when the set has none)."""
    if landmarks is None:
        return np.zeros(n, bool)
    return np.array([usable_landmarks(lm, size) for lm in landmarks], bool)


def self_blended_set(crops, seed: int):
    """A fixed set of self-blended fakes of a CropSet's REAL crops, for validation and test.

    Returns (CropSet of the reals + their fakes, BlendStats). The fakes of a video are the crops of a
    pseudo-video ``<name>#sbi`` labelled FAKE, in the same split group as the real video, so per-video
    scores and thresholds work as on labelled data. Points come from ``CropSet.blend_points``.
    """
    from trainer.data import FAKE, REAL, CropSet, Video

    reals = crops.subset(crops.labels == REAL)
    size = int(reals.images.shape[1]) if len(reals) else 0
    points = reals.blend_points()
    ok = blendable(points, len(reals), size)
    stats = BlendStats(no_landmarks=int((~ok).sum()))
    videos = list(crops.videos)
    fake_vid: dict[int, int] = {}
    images, vid = [], []
    for i in np.where(ok)[0]:
        fake, _ = self_blend(reals.images[i], points[i], blend_seed(seed, int(i)))
        v = int(reals.video[i])
        if v not in fake_vid:
            orig = crops.videos[v]
            fake_vid[v] = len(videos)
            videos.append(Video(orig.path.with_name(orig.path.name + "#sbi"), FAKE, orig.group, orig.name))
        images.append(fake)
        vid.append(fake_vid[v])
        stats.blended += 1
    reals.videos = videos
    if not images:
        return reals, stats
    src = reals.subset(ok)
    both = lambda a, b: None if a is None else np.concatenate([a, b])
    return CropSet(
        images=np.concatenate([reals.images, np.stack(images)]),
        labels=np.concatenate([reals.labels, np.full(len(images), FAKE, np.int64)]),
        video=np.concatenate([reals.video, np.asarray(vid, np.int64)]),
        frame_index=both(reals.frame_index, src.frame_index),
        videos=videos,
        boxes=both(reals.boxes, src.boxes),
        landmarks=both(reals.landmarks, src.landmarks),
        outline=both(reals.outline, src.outline),
        blended=np.concatenate([reals.is_blended(), np.ones(len(images), bool)]),
    ), stats


def self_blended_dataset(crops, transform, seed: int, *, labelled: bool = False):
    """A torch Dataset: every REAL crop (label 0) and, per blendable REAL crop, a fresh self-blended fake (label 1).

    With ``labelled``, the set's FAKE crops of videos are served too (label 1). Fakes change every epoch
    (``set_epoch``) and are the same for the same (seed, epoch, index). Items: (float32 [3,S,S], float32 label).
    ``stats`` counts REAL crops without usable landmarks (served as reals only).
    """
    import torch
    from torch.utils.data import Dataset

    from trainer.data import FAKE, REAL

    size = int(crops.images.shape[1])
    real = np.where(crops.labels == REAL)[0]
    points = crops.blend_points()
    ok = blendable(None if points is None else points[real], len(real), size)
    sources = real[ok]
    # The set's own fixed self-blended fakes (for the scorer's fit) are never served: fresh ones are.
    served = np.where((crops.labels == FAKE) & ~crops.is_blended())[0] if labelled else np.zeros(0, np.int64)

    class _SelfBlended(Dataset):
        def __init__(self):
            self.images = torch.from_numpy(crops.images).permute(0, 3, 1, 2)  # uint8 NCHW view
            self.epoch = 0
            self.stats = BlendStats(blended=len(sources), no_landmarks=int((~ok).sum()))
            self.order = np.concatenate([real, served, sources]).astype(np.int64)
            self.n_plain = len(real) + len(served)

        def set_epoch(self, epoch: int) -> None:
            self.epoch = int(epoch)

        def __len__(self):
            return len(self.order)

        def __getitem__(self, k):
            i = int(self.order[k])
            if k < self.n_plain:
                return transform(self.images[i]), torch.tensor(float(crops.labels[i]))
            fake, _ = self_blend(crops.images[i], points[i], blend_seed(seed, self.epoch, i))
            return transform(torch.from_numpy(fake).permute(2, 0, 1)), torch.tensor(1.0)

    return _SelfBlended()
