"""Real encoded test video, made by the tests with PyAV's bundled libx264."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np


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
    """Encode ``frames`` frames of ``frame_fn(index, width, height)`` (uint8 RGB) as H.264 yuv420p MP4."""
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as out:
        x264 = {"preset": "veryfast", "crf": "23", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:mbtree=0"}
        stream = out.add_stream("libx264", rate=fps, options=x264)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.time_base = Fraction(1, fps)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_fn(i, width, height), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
