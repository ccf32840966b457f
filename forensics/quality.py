"""Input-quality gate: crops a face score should not be trusted on, for reasons that are not adversarial.

A crop gets ``low_quality`` reasons, kept apart from the anomaly detector's ``anomalous`` flag, when

- ``blur``: its focus, the variance of the Laplacian over the variance of the image, both of the
  grey crop at 64x64 (larger crops are downscaled, so the measure does not depend on the model's
  input size; dividing by the variance makes it independent of contrast), is under
  ``quality.min_focus``;
- ``blocky``: its blockiness, the luma step across the source frame's 8x8 codec grid over the
  step half a block away (interquartile means over every line), is over ``quality.max_blockiness``. The grid lies in the source
  frame, so it is mapped into the crop through the crop's region in the frame (the square it was
  cut from); without a region the crop is taken as aligned to the grid at 1:1. When the grid's
  period in the crop is under ``MIN_PERIOD_PX`` (a face cut from a region over 4x the crop's
  side), blockiness is unmeasurable (NaN) and never flags;
- ``tiny_face``: the face box's longer side in source pixels is under ``quality.min_face_px``;
- ``no_face``: the face detector the model's crops were made with (its manifest's crop detector,
  BlazeFace or Haar; :func:`forensics.faces.face_presence`) finds no face in the crop. It costs a
  detector call per crop (BlazeFace ~5 ms at 128 px, Haar ~20 ms, README "Input quality"), so it
  runs where nothing else guarantees a face: ``quality.face_check = "auto"`` turns it on in
  whole-frame mode (``faces.detector = "none"``) and off in face mode, whose crops already came
  from a detector (:func:`face_check_on`).

Defaults are measured on generated faces by ``python bench/quality.py`` (README, "Input quality").
The statistics are numpy and OpenCV only: detect workers run them on every crop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import cv2
import numpy as np

from forensics.config import QualitySettings

REASONS = ("blur", "blocky", "tiny_face", "no_face")
FOCUS_SIDE = 64  # focus is measured at this side (larger crops are downscaled to it)
BLOCK = 8  # the codec's transform grid, source pixels (JPEG, MPEG-2/4, H.264's 8x8 transform and macroblock edges)
_LUMA = np.array([0.299, 0.587, 0.114])
MIN_PERIOD_PX = 2.0  # below this grid period (crop pixels) a step and its mid-block reference are the same pixels


def _grey(images: np.ndarray) -> list[np.ndarray]:
    """uint8 [N, S, S, 3] RGB -> N float64 [S, S] luma (BT.601, as JPEG and H.264 code it)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"need images [N, S, S, 3], got {images.shape}")
    # float luma: integer grey levels would make small steps coarse
    return [np.asarray(im, np.float64) @ _LUMA for im in images]


def focus(images: np.ndarray) -> np.ndarray:
    """Variance of the Laplacian over the image's variance, at 64x64 grey: float64 [N] (0 for a flat crop).

    images: uint8 [N, S, S, 3] RGB; crops over 64 px are downscaled (INTER_AREA), smaller ones
    measured as they are (the defaults were measured at 64). Sharp generated face crops measure ~0.03-0.1; a Gaussian blur
    of sigma 1 px (at 64 px) divides it by ~6 (README, "Input quality").
    """
    out = np.zeros(len(images), np.float64)
    for i, g in enumerate(_grey(images)):
        if g.shape[0] > FOCUS_SIDE:  # smaller crops as they are: upsampling would blur every one of them
            g = cv2.resize(g, (FOCUS_SIDE, FOCUS_SIDE), interpolation=cv2.INTER_AREA)
        var = g.var()
        if var > 1e-9:
            out[i] = cv2.Laplacian(g, cv2.CV_64F, ksize=1).var() / var
    return out


def _edges(lo: float, extent: float, n: int, phase: float) -> tuple[np.ndarray, float]:
    """Crop edge coordinates (pixel i spans [i, i+1)) of source lines ``8k + phase`` inside the crop.

    The crop's ``n`` pixels cover source ``[lo, lo + extent)``; returns the positions, in the
    units of the step profile (index i = the step between pixels i and i+1), and the grid period
    in crop pixels.
    """
    scale = extent / n  # source pixels per crop pixel
    k0, k1 = np.ceil((lo - phase) / BLOCK), np.floor((lo + extent - phase) / BLOCK)
    lines = np.arange(k0, k1 + 1) * BLOCK + phase
    pos = (lines - lo) / scale - 1.0  # edge e sits between pixels e-1 and e: step index e-1
    return pos[(pos >= 0.5) & (pos <= n - 2.5)], BLOCK / scale


def _middle_mean(x: np.ndarray) -> float:
    """Mean of the middle half of ``x``'s values (interquartile mean)."""
    x = np.sort(x, axis=None)
    return float(x[len(x) // 4 : len(x) - len(x) // 4].mean())


def _at(steps: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """steps [L, n-1] sampled at fractional step positions ``pos`` [K] (linear): [L, K]."""
    i0 = np.floor(pos).astype(int)
    w = pos - i0
    return steps[:, i0] * (1 - w) + steps[:, np.minimum(i0 + 1, steps.shape[1] - 1)] * w


def blockiness(images: np.ndarray, regions: Sequence[Sequence[int] | None] | None = None) -> np.ndarray:
    """Luma step on the source's 8x8 grid over the step half a block away: float64 [N].

    images: uint8 [N, S, S, 3] RGB; regions[i]: [x0, y0, x1, y1], the source-frame pixels crop i was
    resized from (None, or no ``regions``: aligned at 1:1). Every line's steps at the grid's lines
    and at the mid-block lines are pooled (both directions), and each side's interquartile mean is
    taken, so a face or background edge that happens to lie on a grid line does not count as a
    block edge (a block edge spans every line; a content edge a few). ~1 on uncompressed crops, >1
    when the codec left block edges; NaN when the grid is finer than ``MIN_PERIOD_PX`` in the crop
    or the crop is flat.
    """
    out = np.full(len(images), np.nan)
    for i, g in enumerate(_grey(images)):
        n = g.shape[0]
        region = regions[i] if regions is not None and i < len(regions) else None
        x0, y0, x1, y1 = region if region is not None else (0, 0, n, n)
        on, off = [], []
        for steps, lo, extent in ((np.abs(np.diff(g, axis=1)), x0, x1 - x0), (np.abs(np.diff(g, axis=0)).T, y0, y1 - y0)):
            grid, period = _edges(lo, extent, n, 0.0)
            mid, _ = _edges(lo, extent, n, BLOCK / 2)
            if extent <= 0 or period < MIN_PERIOD_PX or not len(grid) or not len(mid):
                break
            on.append(_at(steps, grid).ravel())
            off.append(_at(steps, mid).ravel())
        else:
            den = _middle_mean(np.concatenate(off))
            if den > 1e-9:
                out[i] = _middle_mean(np.concatenate(on)) / den
    return out


def face_side(boxes: Sequence[Sequence[int]]) -> np.ndarray:
    """The longer side of each face box [x0, y0, x1, y1] in source pixels: float64 [N]."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])


def face_check_on(cfg: QualitySettings, face_detector: str) -> bool:
    """Whether crops get the ``no_face`` check: ``face_check`` "on", or "auto" in whole-frame mode
    (``face_detector``, the ingest's ``faces.detector``, is "none")."""
    return cfg.enabled and (cfg.face_check == "on" or (cfg.face_check == "auto" and face_detector == "none"))


def face_check_detector(crop_detector: str | None) -> str:
    """The detector the face check runs: the model's crop detector when it is BlazeFace or Haar,
    else BlazeFace (the default; 3-4x faster than Haar, and it finds no face in 98% of heavy-noise crops,
    where Haar finds one in 92%: README "Input quality")."""
    return crop_detector if crop_detector in ("blazeface", "haar") else "blazeface"


@lru_cache(maxsize=2)
def face_checker(detector: str) -> Callable[[np.ndarray], np.ndarray]:
    """The face check of ``detector`` (uint8 [N,S,S,3] RGB -> bool [N], True: a face), built once per process."""
    from forensics.faces import face_presence  # the detector models load only when the check is on

    return face_presence(face_check_detector(detector))


def low_quality(images: np.ndarray, boxes: Sequence[Sequence[int]] | None, regions: Sequence[Sequence[int] | None] | None,
                cfg: QualitySettings, has_face: np.ndarray | None = None) -> list[tuple[str, ...]]:  # fmt: skip
    """The ``low_quality`` reasons of each crop (in ``REASONS`` order; empty: trusted), or all empty
    when the gate is off. ``boxes``: face boxes in source pixels (None: no face size, e.g. whole frames);
    ``has_face``: bool [N], the face check's answer (None: not checked, no ``no_face``)."""
    n = len(images)
    if not cfg.enabled or n == 0:
        return [()] * n
    blur = focus(images) < cfg.min_focus
    with np.errstate(invalid="ignore"):
        blocky = blockiness(images, regions) > cfg.max_blockiness  # NaN (unmeasurable) is never over
    tiny = face_side(boxes) < cfg.min_face_px if boxes is not None and len(boxes) == n else np.zeros(n, bool)
    no_face = ~np.asarray(has_face, bool) if has_face is not None else np.zeros(n, bool)
    return [tuple(r for r, hit in zip(REASONS, flags) if hit) for flags in zip(blur, blocky, tiny, no_face)]


def reason_counts(reasons: Sequence[Sequence[str]]) -> dict[str, int]:
    """How many crops carry each reason: {"blur": n, "blocky": n, "tiny_face": n, "no_face": n}."""
    return {r: sum(r in rs for rs in reasons) for r in REASONS}
