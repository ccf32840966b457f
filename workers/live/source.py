"""One live source: its state machine, decoder and sender threads, and its Redis hash.

The decoder (:mod:`.decode`), sender (:mod:`.sender`) and supervisor-side watchdog and hash
writer (:mod:`.watchdog`) are mixins over the state this class sets up.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import redis

from forensics.alerts import AlertWriter
from forensics.config import LiveSourceSettings, Settings, resolve_frame_size
from forensics.faces import FaceCropper, build_cropper
from forensics.logs import get_logger
from forensics.redact import redact
from forensics.sources import COUNTERS, SENT_COUNTERS
from forensics.streams import Keys
from forensics.timestamps import now_iso
from workers.live.decode import RtspDecoder
from workers.live.sampling import PendingSamples, SourceStats
from workers.live.sender import SampleSender
from workers.live.state import RUNNING, Backoff, SourceState, SourceStateMachine
from workers.live.watchdog import SourceWatch


class LiveSource(RtspDecoder, SampleSender, SourceWatch):
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
        self.keys = Keys.for_settings(settings)
        self.key = self.keys.source(cfg.id)
        self.alerts = alerts or AlertWriter(r, self.keys, disclosure=settings.alerts)
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
            "owner": f"{socket.gethostname()}:{os.getpid()}", "started_at": now_iso(),
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
        self.machine.to(SourceState.STOPPED, "stopped", expect=RUNNING)

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
