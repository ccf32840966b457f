"""Many live sources in one process: start them, watch them, report them."""

from __future__ import annotations

import threading
import time

import redis
from prometheus_client import CollectorRegistry

from forensics.alerts import AlertWriter
from forensics.config import LiveSourceSettings, Settings
from forensics.logs import get_logger
from forensics.metrics import serve as serve_metrics
from forensics.streams import Keys, ensure_group
from workers.live.metrics import LiveMetrics
from workers.live.source import LiveSource

# How often the supervisor checks watchdogs and writes source hashes (it also wakes on every
# state change), and how often a sender held by the backlog looks again.
STATUS_INTERVAL_S = 0.5


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
            self._metrics_server = serve_metrics(port, self.registry)
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
