"""Backgrounds: textures and photos from scikit-image, covered to the frame."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import skimage.data

from trainer.synth.identity import _random_colour


@functools.cache
def _texture_images() -> tuple[np.ndarray, ...]:
    """Grey float32 [512, 512] textures in [0, 1]: brick, grass, gravel."""
    return tuple(
        img.astype(np.float32) / 255.0
        for img in (skimage.data.brick(), skimage.data.grass(), skimage.data.gravel())
    )


@functools.cache
def _photo_images() -> tuple[np.ndarray, ...]:
    """RGB float32 photos in [0, 1] without faces (a face in the background would confuse detection)."""
    return tuple(
        img.astype(np.float32) / 255.0
        for img in (skimage.data.coffee(), skimage.data.rocket(), skimage.data.stereo_motorcycle()[0])
    )


def _cover(image: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of ``image`` resized to cover (height, width)."""
    ih, iw = image.shape[:2]
    scale = max(width / iw, height / ih) * rng.uniform(1.0, 1.6)
    big = cv2.resize(
        image, (max(width, round(iw * scale)), max(height, round(ih * scale))), interpolation=cv2.INTER_LINEAR
    )
    y = int(rng.integers(0, big.shape[0] - height + 1))
    x = int(rng.integers(0, big.shape[1] - width + 1))
    return np.ascontiguousarray(big[y : y + height, x : x + width])


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """float32 [height, width, 3] in [0, 1]: a gradient, texture, noise pattern or photo, maybe with shapes."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs /= width
    ys /= height
    kind = rng.integers(5)
    c0, c1 = _random_colour(rng, (25, 90)), _random_colour(rng, (25, 90))
    if kind == 0:  # linear gradient
        angle = rng.uniform(0, 2 * np.pi)
        t = np.clip((xs - 0.5) * np.cos(angle) + (ys - 0.5) * np.sin(angle) + 0.5, 0, 1)[..., None]
        bg = c0 * (1 - t) + c1 * t
    elif kind == 1:  # radial gradient, like a lamp on a wall
        cx, cy = rng.uniform(0.1, 0.9, 2)
        t = np.clip(np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) / rng.uniform(0.5, 1.2), 0, 1)[..., None]
        bg = c0 * (1 - t) + c1 * t
    elif kind == 2:  # a wall or floor texture, tinted
        texture = _cover(_texture_images()[rng.integers(3)], width, height, rng)
        contrast = rng.uniform(0.3, 0.9)
        bg = c0 * (1.0 + contrast * (texture[..., None] - 0.5))
    elif kind == 3:  # smooth multi-scale noise between two colours
        t = np.zeros((height, width), np.float32)
        for octave in range(4):
            cells = 2 + 3 * 2**octave
            coarse = rng.random((cells, cells), dtype=np.float32)
            t += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) / 2**octave
        t = np.clip((t - t.min()) / (np.ptp(t) + 1e-6), 0, 1)[..., None]
        bg = c0 * (1 - t) + c1 * t
    else:  # an out-of-focus photo
        bg = _cover(_photo_images()[rng.integers(len(_photo_images()))], width, height, rng)
    bg = np.ascontiguousarray(bg, dtype=np.float32)
    if rng.random() < 0.6:  # furniture-like shapes: frames, doors, shelves, lamps
        unit = height / 240.0
        for _ in range(int(rng.integers(2, 7))):
            colour = tuple(float(c) for c in _random_colour(rng, (15, 95)))
            x0, y0 = int(rng.uniform(-0.1, 1.0) * width), int(rng.uniform(-0.1, 1.0) * height)
            x1, y1 = x0 + int(rng.uniform(0.05, 0.5) * width), y0 + int(rng.uniform(0.05, 0.6) * height)
            shape = rng.integers(3)
            if shape == 0:
                cv2.rectangle(
                    bg, (x0, y0), (x1, y1), colour, -1 if rng.random() < 0.6 else max(1, int(4 * unit))
                )
            elif shape == 1:
                cv2.circle(bg, (x0, y0), int(rng.uniform(0.03, 0.15) * width), colour, -1, cv2.LINE_AA)
            else:
                cv2.line(bg, (x0, y0), (x1, y1), colour, max(1, int(rng.uniform(1, 6) * unit)), cv2.LINE_AA)
    blur = rng.uniform(0.0, 2.5) * height / 240.0  # depth of field
    if blur > 0.3:
        bg = cv2.GaussianBlur(bg, (0, 0), blur)
    return np.clip(bg, 0.0, 1.0)
