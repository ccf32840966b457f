"""Live sources (RTSP cameras): one decoder thread and one sender thread per source, under a supervisor.

Policy for live sources: stay current. Files wait and lose nothing (workers/ingest.py); a live
source never waits. Per source::

    decoder thread   PyAV over TCP with open/read timeouts -> decode every frame (or keyframes)
                     -> sample at the source's fps by timestamp -> PendingSamples (bounded; when
                     full, the OLDEST sample is dropped and counted)
    sender thread    PendingSamples -> hold while the detect group's backlog >= max_backlog
                     -> face crops -> one FrameBatch per sampled frame -> XADD <prefix>:frames
    supervisor       watchdog, state and counters to <prefix>:sources:<id>, `source` alerts,
                     Prometheus metrics

The decoder thread never talks to Redis, so a slow or unreachable Redis never delays decoding:
samples pile up at the source and the oldest are dropped.

Each source is a state machine with locked transitions::

    stopped -> connecting -> streaming -> stalled -> backing_off -> connecting -> ...
                          \\-> backing_off (cannot open, or no frame)
    connecting | streaming | stalled | backing_off -> stopped (shutdown)

Reconnects back off exponentially with jitter up to a cap; the backoff starts over after a
stable streaming period. A source that is not streaming for ``down_after`` seconds raises a
``source`` alert (state ``down``), and one (state ``up``) when frames flow again; outages are
numbered in the source hash, so alert ids (``<id>:source:down:<n>``) are stable across restarts.

Batch sequence numbers come from ``HINCRBY <prefix>:sources:<id> seq``, so they keep increasing
across restarts of the ingest process and stream ids stay unique.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

import av
import numpy as np
import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import ValidationError

from forensics.alerts import AlertWriter, make_alert
from forensics.config import LiveSourceSettings, Settings, resolve_frame_size
from forensics.errors import ConfigError
from forensics.faces import FaceCropper, build_cropper
from forensics.logs import get_logger
from forensics.outage import Outage
from forensics.redisconn import redact
from forensics.streams import Keys, backlog, ensure_group
from forensics.video import DecodedFrame, TickGrid
from forensics.wire import FrameBatch, encode

# How often the supervisor checks watchdogs and writes source hashes (it also wakes on every
# state change), and how often a sender held by the backlog looks again.
STATUS_INTERVAL_S = 0.5
HOLD_POLL_S = 0.1
# A sender that cannot reach Redis waits this long before trying again.
# Jumps of the stream clock larger than this (forward) are treated as a restart of the camera's clock.
MAX_CLOCK_GAP_S = 5.0


class SourceState(str, enum.Enum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    STALLED = "stalled"
    BACKING_OFF = "backing_off"
    STOPPED = "stopped"


_ALLOWED: dict[SourceState, frozenset[SourceState]] = {
    SourceState.STOPPED: frozenset({SourceState.CONNECTING}),
    SourceState.CONNECTING: frozenset({SourceState.STREAMING, SourceState.BACKING_OFF, SourceState.STOPPED}),
    SourceState.STREAMING: frozenset({SourceState.STALLED, SourceState.STOPPED}),
    SourceState.STALLED: frozenset({SourceState.BACKING_OFF, SourceState.STOPPED}),
    SourceState.BACKING_OFF: frozenset({SourceState.CONNECTING, SourceState.STOPPED}),
}
_RUNNING = frozenset(set(SourceState) - {SourceState.STOPPED})

# Why a sample was dropped: the detect group's backlog was over the limit (the live policy),
# the sender could not keep up (overload), Redis was unreachable, or a bug (error).
DROP_REASONS = ("backlog", "overload", "redis", "error")


class IllegalTransition(RuntimeError):
    """A transition the state machine does not allow: a programming error."""


class SourceStateMachine:
    """The state of one source. Transitions are checked and made under a lock.

    ``on_change(old, new, reason)`` is called after each transition, outside the lock.
    """

    def __init__(self, on_change: Callable[[SourceState, SourceState, str], None] | None = None):
        self._lock = threading.Lock()
        self._on_change = on_change
        self.state = SourceState.STOPPED
        self.since = time.monotonic()
        self.since_wall = time.time()
        self.history: collections.deque[tuple[SourceState, str]] = collections.deque(maxlen=64)

    def to(self, new: SourceState, reason: str = "", *, expect: Iterable[SourceState] | None = None) -> bool:
        """Move to ``new``. With ``expect``, only from one of those states (else return False).

        Raises IllegalTransition for a move the machine does not allow.
        """
        with self._lock:
            old = self.state
            if expect is not None and old not in expect:
                return False
            if new not in _ALLOWED[old]:
                raise IllegalTransition(f"{old.value} -> {new.value}")
            self.state = new
            self.since = time.monotonic()
            self.since_wall = time.time()
            self.history.append((new, reason))
        if self._on_change is not None:
            self._on_change(old, new, reason)
        return True


class Backoff:
    """Reconnect delays: initial, 2x, 4x, ... up to ``maximum``, each scaled by a random factor
    in [1 - jitter, 1 + jitter] (and capped). :meth:`reset` starts over from ``initial``."""

    def __init__(self, initial: float, maximum: float, jitter: float, rng: random.Random | None = None):
        self.initial, self.maximum, self.jitter = initial, maximum, jitter
        self.rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        base = min(self.maximum, self.initial * 2.0 ** min(self.failures, 60))
        self.failures += 1
        return min(self.maximum, base * self.rng.uniform(1.0 - self.jitter, 1.0 + self.jitter))

    def reset(self) -> None:
        self.failures = 0


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


COUNTERS = (
    "frames_decoded",
    "frames_sampled",
    "frames_dropped",
    *(f"dropped_{r}" for r in DROP_REASONS),
    "no_face_frames",
    "decode_errors",
    "reconnects",
    "connections",
)
# Written by the sender in the same transaction as the XADD, so they match the stream exactly.
SENT_COUNTERS = ("batches_sent", "frames_sent", "images_sent")


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


def _now_iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, timezone.utc).isoformat(
        timespec="milliseconds"
    )


def _ffmpeg_message(err: BaseException) -> str:
    return str(getattr(err, "strerror", None) or err).strip()


class LiveSource:
    """One live source: its state machine, decoder and sender threads, and its Redis hash.

    ``start()`` starts the threads; the supervisor calls ``watchdog()`` and ``publish()``
    periodically; ``stop()`` ends the threads.
    """

    def __init__(
        self,
        cfg: LiveSourceSettings,
        settings: Settings,
        r: redis.Redis,
        *,
        alerts: AlertWriter | None = None,
        wake: threading.Event | None = None,
        cropper: FaceCropper | None = None,
    ):
        self.cfg = cfg
        self.id = cfg.id
        self.settings = settings
        self.r = r
        self.keys = Keys(settings.redis.prefix)
        self.key = self.keys.source(cfg.id)
        self.alerts = alerts or AlertWriter(r, self.keys)
        self.url_shown = redact(cfg.url)
        self.log = get_logger(source=cfg.id)
        self.cropper = cropper or build_cropper(settings.faces, resolve_frame_size(settings))
        self.stats = SourceStats()
        self.pending = PendingSamples(cfg.max_pending)
        self.backoff = Backoff(cfg.backoff_initial, cfg.backoff_max, cfg.backoff_jitter)
        self._wake = wake or threading.Event()
        self._stop = threading.Event()
        self._restart = threading.Event()  # set by the watchdog: drop this connection
        self.machine = SourceStateMachine(self._state_changed)
        self.reason = ""  # last error reason
        self.reason_at: float | None = None
        self.retry_in: float | None = None
        self.hold: str | None = None  # why the sender is not sending: backlog | redis | None
        self._threads: list[threading.Thread] = []
        self._restart_reason = ""
        self._connection = 0  # connections opened by this process
        self._index = 0  # frames decoded by this process
        self._last_progress = 0.0  # monotonic time of the last frame (or of the open)
        self._streaming_since = 0.0
        self._logged_reason = ""
        # Supervisor-side bookkeeping (only touched by the supervisor thread).
        self._flushed = dict.fromkeys(COUNTERS, 0)
        self._not_streaming_since: float | None = time.monotonic()
        self._outage: int | None = None  # open outage number (a down alert is out, no up alert yet)
        self._outage_started: float | None = None  # unix time the source stopped streaming
        self._alert_queue: list[dict] = []

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Read what the hash remembers (an open outage), then start the decoder and sender threads."""
        down, outages = self.r.hmget(self.key, ["down", "outages"])
        if down == b"1" and outages:
            # An outage declared by an earlier run is still open: its up alert is still owed,
            # and its down alert is re-sent in case that run died before sending it (ids dedupe).
            self._outage = int(outages)
            since = self.r.hget(self.key, "down_since")
            self._outage_started = float(since) if since else time.time()
            self._alert_queue.append(
                self._outage_alert("down", self._outage, "still down after an ingest restart")
            )
        self.r.hset(self.key, mapping={
            "kind": "live", "url": self.url_shown, "fps": self.cfg.fps, "keyframes_only": int(self.cfg.keyframes_only),
            "max_backlog": self.cfg.max_backlog, "max_pending": self.cfg.max_pending,
            "owner": f"{socket.gethostname()}:{os.getpid()}", "started_at": _now_iso(),
        })  # fmt: skip
        pipe = self.r.pipeline(transaction=True)
        for name in (*COUNTERS, *SENT_COUNTERS, "seq", "outages"):
            pipe.hsetnx(self.key, name, 0)  # every counter present from the start, for readers
        pipe.execute()
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._decode_loop, name=f"live-decode-{self.id}", daemon=True),
            threading.Thread(target=self._send_loop, name=f"live-send-{self.id}", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self, deadline: float | None = None) -> None:
        """Stop both threads, waiting until ``deadline`` (monotonic; default: read_timeout + 2 s
        from now, time enough for a decoder stuck in a read to notice)."""
        self.request_stop()
        if deadline is None:
            deadline = time.monotonic() + self.cfg.read_timeout + 2.0
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.machine.to(SourceState.STOPPED, "stopped", expect=_RUNNING)

    def request_stop(self) -> None:
        """Ask both threads to end, without waiting (see :meth:`stop`)."""
        self._stop.set()
        self.pending.wake()

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    # -- state changes ------------------------------------------------------------------------
    def _state_changed(self, old: SourceState, new: SourceState, reason: str) -> None:
        if new is SourceState.STREAMING:
            self._not_streaming_since = None
        elif old is SourceState.STREAMING or self._not_streaming_since is None:
            self._not_streaming_since = time.monotonic()
        self.log.debug("state", old=old.value, new=new.value, reason=reason or None)
        self._wake.set()

    def _failed(self, reason: str) -> None:
        self.reason = reason
        self.reason_at = time.time()

    # -- decoder thread -----------------------------------------------------------------------
    def _decode_loop(self) -> None:
        attempts = 0
        while not self._stop.is_set():
            if attempts:
                self.stats.add("reconnects")
            attempts += 1
            self._restart.clear()
            self.retry_in = None
            self.machine.to(SourceState.CONNECTING, expect={SourceState.STOPPED, SourceState.BACKING_OFF})
            try:
                reason = self._connect_and_stream()
            except Exception as err:  # a bug here, not the camera: say so loudly, keep the source alive
                self.log.exception("live source failed unexpectedly; will reconnect")
                reason = f"internal error: {type(err).__name__}: {err}"
            if self._stop.is_set():
                break
            was_streaming = self.machine.to(SourceState.STALLED, reason, expect={SourceState.STREAMING})
            self._failed(reason)
            delay = self.backoff.next_delay()
            self.retry_in = delay
            self.machine.to(
                SourceState.BACKING_OFF, reason, expect={SourceState.CONNECTING, SourceState.STALLED}
            )
            level = "warning" if reason != self._logged_reason else "debug"
            what = "stream lost" if was_streaming else "cannot stream"
            getattr(self.log, level)(
                f"{what}: {reason}; retrying", retry_in_s=round(delay, 2), url=self.url_shown
            )
            self._logged_reason = reason
            self._stop.wait(delay)
        self.machine.to(SourceState.STOPPED, "stopped", expect=_RUNNING)

    def _open_options(self) -> dict[str, str]:
        scheme = urlsplit(self.cfg.url).scheme.lower()
        if scheme not in ("rtsp", "rtsps"):
            return {}
        # TCP: no lost packets (and no smeared frames) on lossy links, and it passes NAT and
        # firewalls. fpsprobesize=0: sampling goes by timestamps, so opening does not wait ~1 s
        # of stream to estimate a frame rate.
        return {
            "rtsp_transport": "tcp",
            # Socket I/O timeout (microseconds), a backstop: the open/read timeouts given to
            # av.open are the ones meant to fire, so this must not be shorter than either.
            "timeout": str(int(max(self.cfg.open_timeout, self.cfg.read_timeout) * 1e6)),
            "fpsprobesize": "0",
        }

    def _connect_and_stream(self) -> str:
        """Open the URL and decode until the stream ends or stalls; returns why it ended."""
        cfg = self.cfg
        t0 = time.monotonic()
        try:
            container = av.open(
                cfg.url, options=self._open_options(), timeout=(cfg.open_timeout, cfg.read_timeout)
            )
        except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
            return self._open_failure(err, time.monotonic() - t0)
        try:
            if not container.streams.video:
                return "the URL has no video stream"
            stream = container.streams.video[0]
            cc = stream.codec_context
            cc.thread_count = cfg.decode_threads
            cc.thread_type = "AUTO" if cfg.decode_threads != 1 else "NONE"
            self._connection += 1
            self._last_progress = time.monotonic()
            self.stats.add("connections")
            self.stats.width, self.stats.height, self.stats.codec = cc.width, cc.height, cc.name
            return self._stream(container, stream)
        except (av.FFmpegError, OSError) as err:
            if (
                isinstance(err, av.error.ExitError)
                or time.monotonic() - self._last_progress >= cfg.read_timeout * 0.9
            ):
                return f"no data for {cfg.read_timeout:g} s (read timeout)"
            return f"stream broke: {_ffmpeg_message(err)}"
        finally:
            container.close()

    def _open_failure(self, err: BaseException, elapsed: float) -> str:
        msg = _ffmpeg_message(err)
        if isinstance(err, ConnectionRefusedError):
            return f"cannot connect: connection refused by {urlsplit(self.cfg.url).netloc.rsplit('@', 1)[-1]}"
        if isinstance(err, av.error.ExitError) or elapsed >= self.cfg.open_timeout * 0.9:
            return f"cannot connect: no usable answer within {self.cfg.open_timeout:g} s (open timeout)"
        answer = msg.replace("Server returned ", "")
        if isinstance(err, av.error.HTTPClientError):
            hint = "check user:password in the URL" if "401" in msg or "403" in msg else "check the path"
            return f"cannot open: the server answered {answer} ({hint})"
        if isinstance(err, av.error.HTTPServerError):
            return f"cannot open: the server answered {answer} (a fault on the camera's side)"
        if isinstance(err, av.error.InvalidDataError):
            protocol = urlsplit(self.cfg.url).scheme.upper()
            return f"cannot open: the server does not speak {protocol} or sent no usable stream ({msg})"
        host = urlsplit(self.cfg.url).hostname
        if host:
            try:
                socket.getaddrinfo(host, None)
            except OSError:
                return f"cannot connect: host {host!r} does not resolve"
        return f"cannot open: {msg}"

    def _stream(self, container, stream) -> str:
        cfg = self.cfg
        sampler = LiveSampler(cfg.fps)
        streaming = False
        self._last_progress = time.monotonic()
        lag_base: float | None = None
        cc = stream.codec_context
        keyframes_only = cfg.keyframes_only
        tb = stream.time_base
        last_packet = time.monotonic()
        for packet in container.demux(stream):
            now = time.monotonic()
            if self._stop.is_set():
                return "stopped"
            if self._restart.is_set():
                return self._restart_reason
            if now - last_packet >= cfg.read_timeout * 0.95:
                # PyAV's read timeout fired: FFmpeg's RTSP reader then hands back a bogus packet
                # (and would wait a second read_timeout) instead of raising. Do not decode it.
                return f"no data for {cfg.read_timeout:g} s (read timeout)"
            last_packet = now
            if packet.size == 0:
                continue  # end-of-stream flush: the frames it would drain are stale for a live source
            frames = []
            if not keyframes_only or packet.is_keyframe:
                try:
                    frames = cc.decode(packet)
                    if keyframes_only:
                        # A keyframe decodes on its own; draining makes the decoder hand it over now
                        # instead of holding it for reordering until the next keyframe.
                        frames += cc.decode(None)
                        cc.flush_buffers()
                except av.FFmpegError:
                    self.stats.add("decode_errors")  # a damaged packet: skip it, keep the connection
            now = time.monotonic()
            if not frames:
                if now - self._last_progress > cfg.stall_timeout:
                    return f"no frame for {cfg.stall_timeout:g} s (watchdog)"
                continue
            self._last_progress = now
            for frame in frames:
                wall = time.time()
                index = self._index
                self._index += 1
                self.stats.add("frames_decoded")
                self.stats.last_frame_mono, self.stats.last_frame_wall = now, wall
                if not streaming:
                    streaming = True
                    self._streaming_since = now
                    self.machine.to(SourceState.STREAMING, expect={SourceState.CONNECTING})
                    self.log.info("streaming", width=frame.width, height=frame.height, codec=stream.codec_context.name,
                                  connection=self._connection)  # fmt: skip
                    self._logged_reason = ""
                if self.backoff.failures and now - self._streaming_since >= cfg.stable_after:
                    self.backoff.reset()
                # frame.time is NaN for frames drained from the decoder: use the stream's time base.
                pts = float(frame.pts * tb) if frame.pts is not None and tb is not None else None
                t = sampler.clock(pts, now)
                lag_base = (now - t) if lag_base is None else min(lag_base, now - t)
                self.stats.lag = (now - t) - lag_base
                if sampler.keep(t):
                    self.stats.add("frames_sampled")
                    dropped = self.pending.put(Sample(frame, index, pts, wall, self._connection))
                    if dropped is not None:
                        self.stats.drop(self.hold or "overload")
        return "the stream ended (the camera closed it)"

    # -- sender thread ------------------------------------------------------------------------
    def _send_loop(self) -> None:
        frames_key = self.keys.frames
        conf = self.settings.redis
        # Lost Redis: logged once per outage with its duration; retries back off (capped, jittered);
        # decoding goes on and the samples that do not fit the pending queue are counted as drops.
        outage = Outage(f"live source {self.id}", self.log, base_s=conf.retry_base_s, cap_s=conf.retry_cap_s)
        while not self._stop.is_set():
            if not self.pending.wait(0.25):
                continue
            try:
                if backlog(self.r, frames_key) >= self.cfg.max_backlog:
                    self.hold = "backlog"
                    self._stop.wait(HOLD_POLL_S)
                    continue
                self.hold = None
                sample = self.pending.get()
                if sample is not None:
                    self._send_or_drop(sample)
            except redis.RedisError as err:
                self.hold = "redis"
                if isinstance(err, redis.ResponseError) and ("no such key" in str(err) or "NOGROUP" in str(err)):
                    with contextlib.suppress(redis.RedisError):
                        ensure_group(self.r, frames_key)  # the stream was deleted under us
                outage.wait(err, self._stop)
                continue
            outage.ok()

    def _send_or_drop(self, sample: Sample) -> None:
        try:
            self._send(sample)
        except redis.RedisError:
            self.stats.drop("redis")
            raise
        except Exception:  # a bug in cropping or encoding: say so loudly, drop this sample, keep going
            self.log.exception("cannot send a sample")
            self.stats.drop("error")

    def _send(self, s: Sample) -> None:
        crops = self.cropper.crops(DecodedFrame(index=s.index, pts=s.pts, frame=s.frame))
        if not crops:
            self.stats.add("no_face_frames")
            return
        seq = int(self.r.hincrby(self.key, "seq", 1)) - 1
        n = len(crops)
        batch = FrameBatch(
            source=self.id,
            seq=seq,
            source_kind="live",
            images=np.stack([c.image for c in crops]),
            frame_index=[s.index] * n,
            pts=[s.pts] * n,
            wall=[s.wall] * n,
            box=[list(map(int, c.box)) for c in crops],
            track=[c.track for c in crops],
            frame_size=(s.frame.width, s.frame.height),
            info={"connection": s.connection},
        )
        pipe = self.r.pipeline(transaction=True)
        pipe.xadd(self.keys.frames, encode(batch))
        pipe.hincrby(self.key, "batches_sent", 1)
        pipe.hincrby(self.key, "frames_sent", 1)
        pipe.hincrby(self.key, "images_sent", n)
        pipe.hset(self.key, mapping={"last_seq": seq, "last_sent_at": time.time()})
        pipe.execute()
        self.stats.add("batches_sent")
        self.stats.add("frames_sent")
        self.stats.add("images_sent", n)

    # -- supervisor side ----------------------------------------------------------------------
    def watchdog(self, now: float) -> None:
        """Mark a streaming source that produced no frame for stall_timeout as stalled, and have
        its decoder drop the connection (at once if it is reading, else when its read times out)."""
        last = self.stats.last_frame_mono
        if (
            self.machine.state is SourceState.STREAMING
            and last is not None
            and now - last > self.cfg.stall_timeout
        ):
            reason = f"no frame for {self.cfg.stall_timeout:g} s (watchdog)"
            self._restart_reason = reason
            if self.machine.to(SourceState.STALLED, reason, expect={SourceState.STREAMING}):
                self._failed(reason)
                self._restart.set()
                self.log.warning(f"stalled: {reason}")

    def status(self) -> dict[str, str | int | float]:
        """The absolute fields of the source hash (counters are added separately)."""
        st = self.stats
        fields: dict[str, str | int | float] = {
            "state": self.machine.state.value,
            "state_since": _now_iso(self.machine.since_wall),
            "reason": self.reason,
            "reason_at": _now_iso(self.reason_at) if self.reason_at else "",
            "pending": len(self.pending),
            "holding": self.hold or "",
            "lag_s": round(st.lag, 3),
            "retry_in_s": round(self.retry_in, 3) if self.retry_in is not None else "",
            "width": st.width,
            "height": st.height,
            "codec": st.codec,
            "updated_at": _now_iso(),
        }
        if st.last_frame_wall is not None:
            fields["last_frame_at"] = round(st.last_frame_wall, 3)
        return fields

    def publish(self, now: float) -> None:
        """Write state and counter increments to the source hash, and raise/clear outages.

        Raises redis.RedisError (the supervisor logs it and tries again on its next tick).
        """
        counts = self.stats.snapshot()
        deltas = {k: counts[k] - self._flushed[k] for k in COUNTERS if counts[k] != self._flushed[k]}
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.key, mapping=self.status())
        for k, d in deltas.items():
            pipe.hincrby(self.key, k, d)
        pipe.execute()
        for k in deltas:
            self._flushed[k] = counts[k]
        self._track_outage(now)
        while self._alert_queue:
            self.alerts.emit(self._alert_queue[0])  # idempotent: safe to retry after a failure
            self._alert_queue.pop(0)

    def _track_outage(self, now: float) -> None:
        state = self.machine.state
        if state is SourceState.STREAMING and self._outage is not None:
            n = self._outage
            self.r.hset(self.key, mapping={"down": 0, "up_at": _now_iso()})
            self._alert_queue.append(self._outage_alert("up", n, "streaming again"))
            self.log.info("source up", outage=n)
            self._outage = None
        elif (
            state is not SourceState.STOPPED
            and self._outage is None
            and self._not_streaming_since is not None
            and now - self._not_streaming_since >= self.cfg.down_after
        ):
            pipe = self.r.pipeline(transaction=True)
            pipe.hincrby(self.key, "outages", 1)
            since = time.time() - (now - self._not_streaming_since)
            pipe.hset(self.key, mapping={"down": 1, "down_at": _now_iso(), "down_since": round(since, 3)})
            n = int(pipe.execute()[0])
            self._outage, self._outage_started = n, since
            self._alert_queue.append(
                self._outage_alert("down", n, self.reason or f"not streaming ({state.value})")
            )
            self.log.warning(f"source down: {self.reason or state.value}", outage=n)

    def _outage_alert(self, what: str, n: int, reason: str) -> dict:
        started = self._outage_started
        return make_alert(
            "source",
            self.id,
            f"{self.id}:source:{what}:{n}",
            state=what,
            reason=reason,
            outage=n,
            source_state=self.machine.state.value,
            url=self.url_shown,
            down_since=_now_iso(started) if started is not None else None,
            down_for_s=round(time.time() - started, 3) if started is not None else None,
            reconnects=self.stats.counts["reconnects"],
            last_frame_at=self.stats.last_frame_wall,
        )


class LiveMetrics(Collector):
    """Prometheus view of the sources' in-memory counters, read at scrape time."""

    def __init__(self, sources: list[LiveSource]):
        self.sources = sources

    def collect(self):
        ids = [s.id for s in self.sources]
        counters = {
            name: CounterMetricFamily(f"forensics_live_{name}", help_, labels=["source"])
            for name, help_ in (
                ("frames_decoded", "Frames decoded."),
                ("frames_sampled", "Frames kept by the fps sampler."),
                ("batches_sent", "FrameBatches added to the frames stream."),
                ("images_sent", "Images (face crops or whole frames) added to the frames stream."),
                ("no_face_frames", "Sampled frames with no face, not sent."),
                ("decode_errors", "Damaged packets skipped."),
                ("reconnects", "Connection attempts after the first."),
            )
        }
        dropped = CounterMetricFamily(
            "forensics_live_frames_dropped",
            "Sampled frames dropped at the source (oldest first).",
            labels=["source", "reason"],
        )
        state = GaugeMetricFamily(
            "forensics_live_source_state", "1 for the current state.", labels=["source", "state"]
        )
        last = GaugeMetricFamily(
            "forensics_live_last_frame_timestamp_seconds", "Unix time of the last frame.", labels=["source"]
        )
        pending = GaugeMetricFamily(
            "forensics_live_pending_samples", "Samples waiting to be sent.", labels=["source"]
        )
        lag = GaugeMetricFamily(
            "forensics_live_lag_seconds", "How far decoding runs behind the stream.", labels=["source"]
        )
        for sid, s in zip(ids, self.sources):
            counts = s.stats.snapshot()
            for name, fam in counters.items():
                fam.add_metric([sid], counts[name])
            for reason in DROP_REASONS:
                dropped.add_metric([sid, reason], counts[f"dropped_{reason}"])
            current = s.machine.state
            for st in SourceState:
                state.add_metric([sid, st.value], 1.0 if st is current else 0.0)
            if s.stats.last_frame_wall is not None:
                last.add_metric([sid], s.stats.last_frame_wall)
            pending.add_metric([sid], len(s.pending))
            lag.add_metric([sid], s.stats.lag)
        yield from counters.values()
        yield from (dropped, state, last, pending, lag)


class LiveSupervisor:
    """Runs many live sources in one process: starts them, watches them, reports them."""

    def __init__(self, settings: Settings, r: redis.Redis, sources: list[LiveSourceSettings] | None = None):
        self.settings = settings
        self.r = r
        self.keys = Keys(settings.redis.prefix)
        self.log = get_logger()
        self._wake = threading.Event()
        alerts = AlertWriter(r, self.keys)
        cfgs = settings.sources if sources is None else sources
        self.sources = [LiveSource(c, settings, r, alerts=alerts, wake=self._wake) for c in cfgs]
        self.registry = CollectorRegistry()
        self.registry.register(LiveMetrics(self.sources))
        self._metrics_server = None
        self._redis_ok = True

    def source(self, source_id: str) -> LiveSource:
        return next(s for s in self.sources if s.id == source_id)

    def start(self) -> None:
        ensure_group(self.r, self.keys.frames)
        port = self.settings.ingest.metrics_port
        if port is not None and self._metrics_server is None:
            self._metrics_server, _ = start_http_server(port, registry=self.registry)
            self.log.info("serving metrics", port=self._metrics_server.server_port)
        for s in self.sources:
            s.start()
        self.log.info("live sources started", sources=[s.id for s in self.sources])

    def tick(self) -> None:
        """Watchdogs, then hashes and alerts. A Redis outage is logged once and retried next tick."""
        now = time.monotonic()
        for s in self.sources:
            s.watchdog(now)
        for s in self.sources:
            try:
                s.publish(now)
            except redis.RedisError as err:
                if self._redis_ok:
                    self.log.warning(f"cannot write source state to Redis: {err}; will retry")
                self._redis_ok = False
                return
        if not self._redis_ok:
            self.log.info("writing source state to Redis again")
        self._redis_ok = True

    def run(self, stop: threading.Event) -> None:
        """Start every source and supervise until ``stop`` is set; then stop them all."""
        self.start()
        try:
            while not stop.is_set():
                self.tick()
                self._wake.wait(STATUS_INTERVAL_S)
                self._wake.clear()
        finally:
            self.close()

    def close(self) -> None:
        for s in self.sources:
            s.request_stop()  # all at once: each may take up to read_timeout to notice
        deadline = time.monotonic() + max((s.cfg.read_timeout for s in self.sources), default=0.0) + 2.0
        for s in self.sources:
            s.stop(deadline)
        try:
            self.tick()
        except redis.RedisError:
            pass
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        self.log.info("live sources stopped")


def source_from_spec(spec: str) -> LiveSourceSettings:
    """A live source from the CLI's ``--rtsp ID=URL``; raises ConfigError with one line if malformed."""
    source_id, sep, url = spec.partition("=")
    if not sep or not source_id.strip() or not url.strip():
        raise ConfigError(f"--rtsp {spec!r}: expected ID=URL, e.g. --rtsp cam1=rtsp://10.0.0.5:554/stream")
    try:
        return LiveSourceSettings(id=source_id.strip(), url=url.strip())
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"--rtsp {spec!r}: {problems}") from None


_INT_FIELDS = {*COUNTERS, *SENT_COUNTERS, "seq", "last_seq", "outages", "down", "pending", "width", "height",
               "max_backlog", "max_pending", "keyframes_only", "batches"}  # fmt: skip
_FLOAT_FIELDS = {"fps", "lag_s", "retry_in_s", "last_frame_at", "last_sent_at"}


def source_rows(r: redis.Redis, settings: Settings) -> list[dict]:
    """Every source hash under the prefix (live and file), plus configured live sources never
    started (state ``unknown``), sorted by id. Numbers are ints/floats, the rest strings."""
    keys = Keys(settings.redis.prefix)
    head = keys.source("")
    rows: dict[str, dict] = {}
    for key in r.scan_iter(match=f"{head}*", count=500):
        source_id = key.decode()[len(head) :]
        row: dict = {"id": source_id}
        for k, v in r.hgetall(key).items():
            name, text = k.decode(), v.decode()
            try:
                row[name] = (
                    int(text) if name in _INT_FIELDS else float(text) if name in _FLOAT_FIELDS else text
                )
            except ValueError:
                row[name] = text
        rows[source_id] = row
    for cfg in settings.sources:
        rows.setdefault(cfg.id, {"id": cfg.id, "kind": "live", "state": "unknown", "url": redact(cfg.url)})
    return [rows[k] for k in sorted(rows)]
