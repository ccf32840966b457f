"""Between a live source's decoder and its sender: the fps sampler, the bounded queue of samples
(oldest dropped when full) and the source's in-memory counters."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

import av

from forensics.sources import COUNTERS, SENT_COUNTERS
from forensics.video import TickGrid

# Jumps of the stream clock larger than this (forward) are treated as a restart of the camera's clock.
MAX_CLOCK_GAP_S = 5.0



class LiveSampler:
    """Keeps the first frame at or after each 1/fps tick of a continuous stream clock (seconds).

    The clock follows the frames' pts. A frame without pts (often the first of an RTSP session)
    is placed by its arrival time after the previous frame; so is a frame whose pts jumps back,
    or forward by more than ``max_gap`` (a camera that restarted its clock), after which pts are
    followed again from there. One sampler per connection.
    """

    def __init__(self, fps: float, max_gap: float = MAX_CLOCK_GAP_S):
        self.period = 1.0 / fps
        self.max_gap = max_gap
        self.grid = TickGrid(fps)
        self._last: tuple[float, float] | None = None  # (clock, arrival) of the previous frame
        self._offset: float | None = None  # pts - clock

    def clock(self, pts: float | None, arrival: float) -> float:
        """The stream clock of a frame with this pts (None: unknown) arriving at ``arrival`` (monotonic s)."""
        if self._last is None:
            t = 0.0
        else:
            last_t, last_arrival = self._last
            follows = max(last_t, last_t + (arrival - last_arrival))
            if pts is None or self._offset is None:
                t = follows
            else:
                t = pts - self._offset
                if t < last_t - self.period or t - last_t > self.max_gap:
                    t = follows  # discontinuity: continue from arrival time, re-anchor below
                    self._offset = None
        if pts is not None and self._offset is None:
            self._offset = pts - t
        self._last = (t, arrival)
        return t

    def keep(self, t: float) -> bool:
        return self.grid.keep(t)


@dataclass
class Sample:
    """A sampled frame waiting to be sent."""

    frame: av.VideoFrame
    index: int  # frames decoded by this source before this one (this process), across reconnects
    pts: float | None  # presentation time, seconds (None when the stream gave none)
    wall: float  # unix seconds when decoded
    connection: int  # which connection of this process it came from (1, 2, ...)


class PendingSamples:
    """Bounded FIFO between a decoder and its sender. When full, :meth:`put` drops the oldest."""

    def __init__(self, maxlen: int):
        self.maxlen = maxlen
        self._q: collections.deque[Sample] = collections.deque()
        self._cv = threading.Condition()

    def put(self, sample: Sample) -> Sample | None:
        """Append; returns the sample dropped to make room, if any."""
        with self._cv:
            dropped = self._q.popleft() if len(self._q) >= self.maxlen else None
            self._q.append(sample)
            self._cv.notify()
        return dropped

    def wait(self, timeout: float) -> bool:
        """True once a sample is waiting (or after ``timeout`` s, False if still empty)."""
        with self._cv:
            return self._cv.wait_for(lambda: bool(self._q), timeout)

    def get(self) -> Sample | None:
        with self._cv:
            return self._q.popleft() if self._q else None

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def __len__(self) -> int:
        return len(self._q)


class SourceStats:
    """Counters of one source (this process's lifetime), safe to bump from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(COUNTERS + SENT_COUNTERS, 0)
        self.last_frame_wall: float | None = None
        self.last_frame_mono: float | None = None
        self.lag = 0.0  # seconds the decoder runs behind the stream (growth of arrival - pts)
        self.width = self.height = 0
        self.codec = ""

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def drop(self, reason: str) -> None:
        with self._lock:
            self.counts["frames_dropped"] += 1
            self.counts[f"dropped_{reason}"] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)
