"""Out-of-distribution crops for testing the anomaly scorer: things that are not clean face crops.

The sets are uint8 [N, S, S, 3] RGB, deterministic for a seed. :func:`gated_rates` says how many of
a set the input-quality gate (forensics.quality) marks low_quality, alone and together with the
anomaly detector's flags: what the eval's and the trainer's OOD tables report ("flagged or gated":
flagged by the shipped defence or gated, the face check included, :func:`ood_flagged_or_gated`).

Categories (see :func:`ood_sets`): ``non_face`` (patches of natural images that packages ship:
cats, coffee, rockets, coins, bricks, grass), ``noise`` (clean crops under heavy Gaussian
noise), ``blur`` (clean crops under heavy Gaussian blur), ``cartoon`` (flat-shaded drawn faces).
"""

from __future__ import annotations

import cv2
import numpy as np

from forensics.config import QualitySettings
from forensics.quality import low_quality

_NATURAL = ("chelsea", "coffee", "rocket", "coins", "brick", "grass", "gravel", "camera", "page", "hubble_deep_field")


def non_face_patches(n: int, size: int, seed: int = 0) -> np.ndarray:
    from skimage import data as skdata

    rng = np.random.default_rng(seed)
    sources = []
    for name in _NATURAL:
        img = getattr(skdata, name)()
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        sources.append(img[..., :3].astype(np.uint8))
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = sources[i % len(sources)]
        h, w = img.shape[:2]
        side = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        out[i] = cv2.resize(img[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
    return out


def heavy_noise(crops: np.ndarray, sigma: float = 0.25, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = crops.astype(np.float32) / 255 + rng.normal(0, sigma, crops.shape).astype(np.float32)
    return (np.clip(noisy, 0, 1) * 255).round().astype(np.uint8)


def heavy_blur(crops: np.ndarray, sigma_px: float | None = None) -> np.ndarray:
    sigma = sigma_px if sigma_px is not None else crops.shape[1] / 16
    return np.stack([cv2.GaussianBlur(c, (0, 0), sigma) for c in crops])


def cartoon_faces(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Flat-shaded drawn faces: head ellipse, eyes, brows, nose, mouth, hair, plain background."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    s = size / 64
    for i in range(n):
        img = np.full((size, size, 3), rng.integers(0, 256, 3), np.uint8)
        skin = tuple(int(v) for v in rng.integers(80, 256, 3))
        cx, cy = size // 2 + int(rng.integers(-3, 4) * s), size // 2 + int(rng.integers(-3, 4) * s)
        ax, ay = int(rng.integers(16, 22) * s), int(rng.integers(20, 27) * s)
        hair = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.ellipse(img, (cx, cy - int(6 * s)), (ax + int(2 * s), ay), 0, 180, 360, hair, -1)
        cv2.ellipse(img, (cx, cy), (ax, ay), 0, 0, 360, skin, -1)
        eye_dx, eye_y = int(rng.integers(6, 9) * s), cy - int(rng.integers(4, 8) * s)
        for dx in (-eye_dx, eye_dx):
            cv2.circle(img, (cx + dx, eye_y), max(1, int(3 * s)), (255, 255, 255), -1)
            cv2.circle(img, (cx + dx, eye_y), max(1, int(1.5 * s)), (20, 20, 20), -1)
            cv2.line(img, (cx + dx - int(3 * s), eye_y - int(5 * s)), (cx + dx + int(3 * s), eye_y - int(5 * s)),
                     hair, max(1, int(s)))  # fmt: skip
        cv2.line(img, (cx, cy - int(2 * s)), (cx - int(2 * s), cy + int(5 * s)), (60, 40, 40), max(1, int(s)))
        cv2.ellipse(img, (cx, cy + int(11 * s)), (int(rng.integers(5, 9) * s), int(3 * s)), 0, 0, 180,
                    (40, 0, 0), max(1, int(s)))  # fmt: skip
        out[i] = img
    return out


def ood_sets(clean: np.ndarray, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The four OOD categories, ``n`` crops each, at the size of ``clean`` crops."""
    size = clean.shape[1]
    rng = np.random.default_rng(seed)
    pick = clean[rng.choice(len(clean), size=min(n, len(clean)), replace=False)]
    return {
        "non_face": non_face_patches(n, size, seed),
        "noise": heavy_noise(pick, seed=seed),
        "blur": heavy_blur(pick),
        "cartoon": cartoon_faces(n, size, seed),
    }


def gated_rates(images: np.ndarray, flagged: np.ndarray, quality: QualitySettings | None = None,
                has_face: np.ndarray | None = None) -> dict[str, float]:  # fmt: skip
    """Shares of uint8 [N, S, S, 3] crops the quality gate marks low_quality (``gated_rate``), that it
    marks ``no_face`` (``no_face_rate``; with ``has_face``, the face check's bool [N], else not checked)
    and that are anomalous (``flagged`` bool [N]) or low_quality (``flagged_or_gated_rate``); crops taken
    1:1 (no region) and without a face box (no tiny_face), at the gate's defaults unless ``quality``."""
    reasons = low_quality(images, None, None, quality or QualitySettings(), has_face)
    gated = np.array([bool(r) for r in reasons], bool)
    if not len(gated):
        return {"gated_rate": float("nan"), "no_face_rate": float("nan"), "flagged_or_gated_rate": float("nan")}
    return {"gated_rate": float(gated.mean()), "no_face_rate": float(np.mean(["no_face" in r for r in reasons])),
            "flagged_or_gated_rate": float((gated | np.asarray(flagged, bool)).mean())}  # fmt: skip


def ood_flagged_or_gated(sets: dict[str, np.ndarray], score, threshold: float, face_check=None,
                         quality: QualitySettings | None = None) -> dict[str, dict[str, float]]:  # fmt: skip
    """Per OOD set: ``flagged_rate`` (``score``: uint8 crops -> float64 [N] of the shipped detector, over
    ``threshold``), the gate's rates and ``flagged_or_gated_rate`` (:func:`gated_rates`), with the face
    check ``face_check`` (uint8 crops -> bool [N]; None: no ``no_face``)."""
    out = {}
    for name, imgs in sets.items():
        flagged = np.asarray(score(imgs)) > threshold
        has_face = face_check(imgs) if face_check is not None else None
        out[name] = {"flagged_rate": float(flagged.mean()), **gated_rates(imgs, flagged, quality, has_face)}
    return out


def scorer_fit_positives(clean: np.ndarray, seed: int = 0) -> np.ndarray:
    """Generic 'not a clean crop' examples for fitting the scorer's layer weights.

    Deliberately unlike the test categories: uniform random pixels and crops whose 8x8
    tiles are shuffled, so the layer weights are not fit to the OOD kinds they are tested on.
    """
    rng = np.random.default_rng(seed)
    n, size = len(clean), clean.shape[1]
    uniform = rng.integers(0, 256, (n // 2, size, size, 3), dtype=np.uint8)
    tile = max(4, size // 8)
    k = size // tile
    shuffled = clean[: n - n // 2].copy()
    for img in shuffled:
        tiles = img[: k * tile, : k * tile].reshape(k, tile, k, tile, 3).transpose(0, 2, 1, 3, 4).reshape(k * k, tile, tile, 3)
        tiles = tiles[rng.permutation(k * k)]
        img[: k * tile, : k * tile] = tiles.reshape(k, k, tile, tile, 3).transpose(0, 2, 1, 3, 4).reshape(k * tile, k * tile, 3)
    return np.concatenate([uniform, shuffled])
