"""Video decoding with PyAV: limits checked before decoding, frame sampling, truncation checks.

Used by file ingest, ``forensics scan`` and the trainer's crop extraction, so all three see
the same frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal

import av
import cv2
import numpy as np

from forensics.config import LimitSettings
from forensics.errors import BadVideo

SampleMode = Literal["every_nth", "fps", "keyframes"]


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    codec: str
    fps: float | None  # average frame rate, if the container says
    duration: float | None  # seconds, if the container says
    frames: int | None  # frame count, if the container says


@dataclass
class DecodedFrame:
    index: int  # frame number in the video (0-based)
    pts: float | None  # presentation time, seconds
    frame: av.VideoFrame

    def rgb(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """uint8 [H, W, 3] RGB of the frame, resized to ``width`` x ``height`` when given."""
        if width is None:
            return self.frame.to_ndarray(format="rgb24")
        return resize_rgb(self.frame, width, height or width)


def resize_rgb(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """A frame resized and converted to uint8 [height, width, 3] RGB.

    For yuv420p (nearly all H.264), the planes are resized with OpenCV first and converted to
    RGB at the small size: on 720p -> 256 this keeps ingest at ~0.9x bare decoding, where
    swscale's RGB reformat ran at ~0.55x (bench/ingest.py). Bilinear resampling is fine for
    whole-frame mode; face crops are cut from the full-resolution frame instead.
    """
    w, h = frame.width, frame.height
    if frame.format.name != "yuv420p" or w % 2 or h % 2 or width % 2 or height % 2:
        return frame.reformat(width=width, height=height, format="rgb24", interpolation="FAST_BILINEAR").to_ndarray()
    planes = frame.to_ndarray()  # I420: Y [h, w], then U and V [h/2, w/2] each, stacked as [h*3/2, w]
    y = planes[:h]
    u = planes[h : h + h // 4].reshape(h // 2, w // 2)
    v = planes[h + h // 4 :].reshape(h // 2, w // 2)
    small = np.empty((height * 3 // 2, width), np.uint8)
    small[:height] = cv2.resize(y, (width, height), interpolation=cv2.INTER_LINEAR)
    small[height : height + height // 4] = cv2.resize(u, (width // 2, height // 2), interpolation=cv2.INTER_LINEAR).reshape(-1, width)
    small[height + height // 4 :] = cv2.resize(v, (width // 2, height // 2), interpolation=cv2.INTER_LINEAR).reshape(-1, width)
    return cv2.cvtColor(small, cv2.COLOR_YUV2RGB_I420)


class TickGrid:
    """Keeps the first time at or after each tick of a 1/fps grid (live and file sampling share it)."""

    def __init__(self, fps: float):
        self.period = 1.0 / fps
        self._next_t: float | None = None

    def keep(self, t: float) -> bool:
        if self._next_t is None or t >= self._next_t - 1e-6:
            # Next tick on the grid after t, so a late frame does not cause a burst.
            base = t if self._next_t is None else self._next_t
            steps = max(1, int((t - base) / self.period) + 1)
            self._next_t = base + steps * self.period
            return True
        return False


class FrameSampler:
    """Decides which decoded frames are kept.

    every_nth: frames 0, N, 2N, ...; fps: the first frame at or after each 1/fps tick of
    presentation time (arrival order when pts is missing); keyframes: every frame the decoder
    returns, since it is told to skip the rest.
    """

    def __init__(self, mode: SampleMode, *, every_nth: int = 1, fps: float = 2.0):
        self.mode = mode
        self.every_nth = every_nth
        self.grid = TickGrid(fps)

    def keep(self, index: int, t: float | None) -> bool:
        if self.mode == "keyframes":
            return True
        if self.mode == "every_nth":
            return index % self.every_nth == 0
        return t is not None and self.grid.keep(t)


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r", timeout=30)
    except av.FFmpegError as err:
        raise BadVideo(f"{path.name}: not a readable video ({_ffmpeg_reason(err)})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadVideo(f"{path.name}: cannot open ({err})") from None


def _ffmpeg_reason(err: BaseException) -> str:
    msg = getattr(err, "strerror", None) or str(err)
    return str(msg).strip()


def probe(path: str | Path, limits: LimitSettings) -> VideoInfo:
    """Check a file against the limits before decoding it; raises BadVideo with the reason."""
    path = Path(path)
    _check_size(path, limits)
    with _open(path) as container:
        return _check_info(path, container, limits)


def _check_size(path: Path, limits: LimitSettings) -> None:
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise BadVideo(f"{path.name}: cannot stat ({err})") from None
    if size == 0:
        raise BadVideo(f"{path.name}: empty file")
    if size > limits.max_bytes:
        raise BadVideo(f"{path.name}: {size} bytes is over the limit of {limits.max_bytes} (ingest.limits.max_bytes)")


def _is_still_or_text(format_name: str) -> bool:
    # FFmpeg opens almost anything: a text file as ANSI art ("tty"), a PNG as a one-frame
    # stream ("png_pipe", "image2"). Those are not videos a user meant to drop.
    names = format_name.split(",")
    return any(n == "tty" or n.endswith("_pipe") or n.startswith("image2") for n in names)


def _check_info(path: Path, container: av.container.InputContainer, limits: LimitSettings) -> VideoInfo:
    if _is_still_or_text(container.format.name):
        raise BadVideo(f"{path.name}: not a video (FFmpeg reads it as {container.format.name})")
    if not container.streams.video:
        raise BadVideo(f"{path.name}: no video stream")
    stream = container.streams.video[0]
    cc = stream.codec_context
    if not cc.width or not cc.height:
        raise BadVideo(f"{path.name}: video stream has no frame size")
    if cc.width > limits.max_width or cc.height > limits.max_height:
        raise BadVideo(
            f"{path.name}: {cc.width}x{cc.height} is over the limit of {limits.max_width}x{limits.max_height} "
            "(ingest.limits.max_width/max_height)"
        )
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    if duration is not None and duration > limits.max_duration:
        raise BadVideo(
            f"{path.name}: {duration:.0f} s is over the limit of {limits.max_duration:.0f} s (ingest.limits.max_duration)"
        )
    rate = stream.average_rate
    return VideoInfo(
        width=cc.width,
        height=cc.height,
        codec=cc.name,
        fps=float(rate) if rate else None,
        duration=duration,
        frames=stream.frames or None,
    )


def decode_file(
    path: str | Path,
    limits: LimitSettings,
    sampler: FrameSampler,
    *,
    threads: int = 0,
    info_out: dict | None = None,
) -> Iterator[DecodedFrame]:
    """Yield the sampled frames of a file, in order.

    Raises BadVideo if the file is unusable, breaks while decoding, turns out truncated
    (fewer frames or less time than its header promises) or yields no frame at all. Frames
    already yielded stay valid; the caller decides what to do with a file that broke mid-way.
    ``info_out`` (if given) receives ``decoded`` and ``sampled`` counts and the VideoInfo.
    """
    path = Path(path)
    stats = info_out if info_out is not None else {}
    stats.update(decoded=0, sampled=0)
    _check_size(path, limits)
    with _open(path) as container:
        info = _check_info(path, container, limits)
        stats["info"] = info
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        if sampler.mode == "keyframes":
            stream.codec_context.skip_frame = "NONKEY"
        tb: Fraction | None = stream.time_base
        start = stream.start_time or 0
        rate = float(stream.average_rate) if stream.average_rate else None
        index = -1
        last_t: float | None = None
        try:
            for frame in container.decode(stream):
                index += 1
                t = float((frame.pts - start) * tb) if (frame.pts is not None and tb is not None) else None
                if sampler.mode == "keyframes" and t is not None and rate:
                    index = int(round(t * rate))  # skipped frames were never decoded
                if t is not None:
                    last_t = t
                    if t > limits.max_duration:
                        raise BadVideo(f"{path.name}: runs past the limit of {limits.max_duration:.0f} s")
                stats["decoded"] += 1
                if sampler.keep(index, t):
                    stats["sampled"] += 1
                    yield DecodedFrame(index=index, pts=t, frame=frame)
        except av.FFmpegError as err:
            raise BadVideo(f"{path.name}: decoding failed after {stats['decoded']} frames ({_ffmpeg_reason(err)})") from None
    if stats["decoded"] == 0:
        raise BadVideo(f"{path.name}: no decodable video frames")
    _check_complete(path, info, stats["decoded"], last_t, keyframes=sampler.mode == "keyframes")


def _check_complete(path: Path, info: VideoInfo, decoded: int, last_t: float | None, *, keyframes: bool) -> None:
    # A file cut short usually still opens (the index is at the front) and decodes quietly
    # until the data runs out; compare what came out with what the header promised.
    if not keyframes and info.frames and decoded < info.frames * 0.98 - 1:
        raise BadVideo(f"{path.name}: truncated: decoded {decoded} of {info.frames} frames")
    if info.duration and last_t is not None:
        frame_time = 1.0 / info.fps if info.fps else 0.0
        slack = max(1.0, 2 * frame_time) if keyframes else max(0.5, 2 * frame_time)
        if keyframes:
            slack = max(slack, 10.0)  # GOPs can be long; only catch gross cuts
        if last_t + frame_time < info.duration - slack:
            raise BadVideo(f"{path.name}: truncated: video stops at {last_t:.1f} s of {info.duration:.1f} s")
