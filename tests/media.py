"""Real encoded test video, made by the tests with the project's H.264 writer (PyAV's bundled libx264)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from trainer.synth.writer import ClipWriter


def moving_pattern(index: int, width: int, height: int) -> np.ndarray:
    """uint8 [H, W, 3]: a gradient background with a bright square moving with ``index``."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (x * 255 // max(1, width - 1)).astype(np.uint8)
    img[..., 1] = (y * 255 // max(1, height - 1)).astype(np.uint8)
    img[..., 2] = (index * 7) % 256
    s = max(8, min(width, height) // 6)
    cx = (index * 5) % max(1, width - s)
    cy = (index * 3) % max(1, height - s)
    img[cy : cy + s, cx : cx + s] = 255
    return img


def write_test_video(
    path: Path,
    *,
    frames: int,
    fps: int,
    width: int,
    height: int,
    gop: int = 30,
    faststart: bool = True,
    frame_fn: Callable[[int, int, int], np.ndarray] = moving_pattern,
) -> Path:
    """Encode ``frames`` frames of ``frame_fn(index, width, height)`` (uint8 RGB) as H.264 yuv420p MP4,
    a keyframe every ``gop`` frames exactly."""
    with ClipWriter(path, width, height, fps, gop=gop, faststart=faststart) as writer:
        for i in range(frames):
            writer.write(frame_fn(i, width, height))
    return path
