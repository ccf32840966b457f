"""H.264 encoding of RGB frames (PyAV, libx264, yuv420p)."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

if TYPE_CHECKING:
    from typing_extensions import Self

CRF = 23  # x264's default quality: visible blocking on noise and fine texture, as in DFDC
_PRESET = "veryfast"


class ClipWriter:
    """Streams uint8 [H, W, 3] RGB frames into an H.264 (libx264, yuv420p) mp4 with PyAV.

    Use as a context manager. By default a keyframe every second (and at scene cuts), so keyframe
    sampling has something to sample; ``gop`` fixes a keyframe every ``gop`` frames exactly (no
    scene-cut keyframes), as test media need. ``faststart`` puts the index at the front of the file.
    Same frames in, same bytes out: single-threaded x264 (the bytes do not depend on the
    core count) without macroblock-tree rate control, because with it PyAV's bundled x264
    (core 165) gave different bytes for identical input depending on the process's heap state.
    The one H.264 writer of the project: synthetic data, test media and benchmarks use it.
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: int, crf: int = CRF, *,
                 gop: int | None = None, faststart: bool = False):  # fmt: skip
        if width % 2 or height % 2:
            raise ValueError(f"H.264 yuv420p needs even frame sizes, got {width}x{height}")
        self.path = Path(path)
        self.width, self.height = width, height
        self._container = av.open(str(self.path), mode="w", options={"movflags": "+faststart"} if faststart else {})
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.codec_context.gop_size = gop or fps
        self._stream.thread_count = 1
        params = "mbtree=0" + (f":keyint={gop}:min-keyint={gop}:scenecut=0" if gop else "")
        self._stream.options = {"crf": str(crf), "preset": _PRESET, "x264-params": params}
        self._time_base = Fraction(1, fps)
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        """Encode one uint8 [H, W, 3] RGB frame."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 frame of shape {(self.height, self.width, 3)}, got {frame.dtype} {frame.shape}"
            )
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        video_frame.pts, video_frame.time_base = self.frames, self._time_base
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_clip(path: str | Path, frames: Iterable[np.ndarray], fps: int, crf: int = CRF) -> None:
    """Encode uint8 [H, W, 3] RGB frames (all the same, even, size) as an H.264 yuv420p mp4."""
    writer: ClipWriter | None = None
    try:
        for frame in frames:
            if writer is None:
                writer = ClipWriter(path, frame.shape[1], frame.shape[0], fps, crf)
            writer.write(frame)
        if writer is None:
            raise ValueError("write_clip needs at least one frame")
    finally:
        if writer is not None:
            writer.close()
