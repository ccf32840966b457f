"""Small input transforms ("feature squeezing", Xu et al. 2018) for the anomaly detector.

A clean face crop barely changes the discriminator's output under a slight blur, a median
filter, a bit-depth reduction or a JPEG re-encode; a crafted perturbation is partly undone by
them, so the logit and the features move. :mod:`forensics.defence` scores those changes.

Every transform maps uint8 [N, S, S, 3] RGB crops to uint8 [N, S, S, 3] (what the detect worker
holds), with OpenCV and numpy only. Names are stable: they are stored in ``defence.npz``.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

Squeezer = Callable[[np.ndarray], np.ndarray]


def bit_depth(images: np.ndarray, bits: int = 4) -> np.ndarray:
    """Keep ``bits`` bits per channel, rounding to the nearest level and mapping back to 0..255."""
    levels = (1 << bits) - 1
    return (np.round(images.astype(np.float32) * (levels / 255.0)) * (255.0 / levels)).round().astype(np.uint8)


def median3(images: np.ndarray) -> np.ndarray:
    """3x3 median filter per channel."""
    return np.stack([cv2.medianBlur(np.ascontiguousarray(im), 3) for im in images]) if len(images) else images


def blur(images: np.ndarray, sigma: float = 0.7) -> np.ndarray:
    """Gaussian blur with ``sigma`` pixels (kernel 5x5), reflected borders."""
    out = [cv2.GaussianBlur(np.ascontiguousarray(im), (5, 5), sigma, borderType=cv2.BORDER_REFLECT_101) for im in images]
    return np.stack(out) if len(images) else images


def jpeg(images: np.ndarray, quality: int = 75) -> np.ndarray:
    """JPEG encode and decode at ``quality`` (OpenCV's libjpeg; channel order does not matter here)."""
    out = []
    for im in images:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(im), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:  # pragma: no cover - OpenCV encodes any uint8 HxWx3 image
            raise RuntimeError("JPEG encoding failed")
        out.append(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED))
    return np.stack(out) if len(images) else images


SQUEEZERS: dict[str, Squeezer] = {"bits4": bit_depth, "median3": median3, "blur0.7": blur, "jpeg75": jpeg}
