"""``forensics up``: every role as a supervised local process, for one machine.

Starts the embedded Redis when no URL is configured and hands its URL to the children (and
restarts it if it dies). A child that exits is restarted after a backoff that doubles with each
recent restart (capped, jittered), within a budget (``max_restarts`` in ``window_s``). Past the
budget the supervisor stops everything and says which role kept failing, unless Redis is down:
a role is never given up on because its dependency is away; it is restarted, with the capped
backoff, until Redis is back.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from forensics.config import Settings
from forensics.errors import ForensicsError
from forensics.logs import get_logger
from forensics.redact import redact
from forensics.redisconn import EmbeddedRedis, connect, connect_settings


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    starts: deque = field(default_factory=lambda: deque(maxlen=64))
    restart_at: float | None = None  # monotonic time of the pending restart


class Supervisor:
    def __init__(self, settings: Settings, roles: list[tuple[str, list[str]]], *, config: str | None = None,
                 max_restarts: int = 5, window_s: float = 60.0, log_dir: Path | None = None,
                 backoff_base_s: float = 0.5, backoff_cap_s: float = 30.0):  # fmt: skip
        self.settings = settings
        self.config = config
        self.children = [Child(name, argv) for name, argv in roles]
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.log_dir = log_dir
        self._redis_down_logged = False
        self.log = get_logger()
        self.embedded: EmbeddedRedis | None = None
        self.url = settings.redis.url

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FORENSICS_REDIS__URL"] = self.url or ""
        env["FORENSICS_STATE_DIR"] = str(self.settings.state_dir)
        env["FORENSICS_MODELS_DIR"] = str(self.settings.models_dir)
        return env

    def _spawn(self, child: Child) -> None:
        argv = [sys.executable, "-m", "forensics.cli"] + (["--config", self.config] if self.config else []) + child.argv
        out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{child.name}.log", "ab")
        child.proc = subprocess.Popen(argv, env=self._env(), stdout=out, stderr=out or None)
        child.starts.append(time.monotonic())
        self.log.info("role started", name=child.name, pid=child.proc.pid)

    def start(self) -> str:
        """Start Redis (if embedded) and every role; returns the Redis URL."""
        if not self.url:
            self.embedded = EmbeddedRedis(self.settings.state_dir)
            if not self.embedded.alive():
                self.embedded.start()
            else:
                self.embedded = None  # someone else's; leave it running
            self.url = EmbeddedRedis(self.settings.state_dir).url
        connect_settings(self.settings, self.url)  # fail now, with one line, if unreachable
        for child in self.children:
            self._spawn(child)
        return self.url

    def watch(self, stop: threading.Event, poll: float = 0.5) -> None:
        """Restart children that exit (after a backoff), until ``stop`` or the restart budget runs
        out while Redis is up."""
        try:
            while not stop.wait(poll):
                self._keep_embedded_redis()
                for child in self.children:
                    self._check(child)
        finally:
            self.stop()

    def _check(self, child: Child) -> None:
        code = child.proc.poll() if child.proc else None
        if code is None:
            return
        now = time.monotonic()
        if child.restart_at is None:
            recent = [t for t in child.starts if now - t < self.window_s]
            if len(recent) > self.max_restarts and self._redis_up():
                raise ForensicsError(
                    f"role {child.name} exited {len(recent)} times within {self.window_s:.0f} s "
                    f"(last exit status {code}); giving up"
                )
            delay = min(self.backoff_cap_s, self.backoff_base_s * 2 ** max(0, len(recent) - 1))
            delay *= random.uniform(0.5, 1.0)  # jitter: roles do not restart in lockstep
            child.restart_at = now + delay
            self.log.warning("role exited; restarting after backoff", name=child.name, status=code,
                             restart_in_s=round(delay, 2))  # fmt: skip
        if now >= child.restart_at:
            child.restart_at = None
            self._spawn(child)

    def _redis_up(self) -> bool:
        """Whether Redis answers; logs once per outage that the budget is suspended meanwhile."""
        try:
            connect(self.url or "", connect_timeout=2.0, socket_timeout=2.0).close()
        except ForensicsError:
            if not self._redis_down_logged:
                self.log.warning("Redis is down: restarting roles with backoff until it is back",
                                 url=redact(self.url or ""))  # fmt: skip
                self._redis_down_logged = True
            return False
        self._redis_down_logged = False
        return True

    def _keep_embedded_redis(self) -> None:
        """Restart the embedded redis-server if it died (its append-only file keeps the data)."""
        emb = self.embedded
        if emb is None or emb.proc is None or emb.proc.poll() is None:
            return
        self.log.warning("embedded redis-server exited; restarting it", status=emb.proc.returncode)
        emb.proc = None
        try:
            emb.start()
        except ForensicsError as err:
            self.log.error("cannot restart the embedded redis-server; will retry", error=str(err))

    def stop(self) -> None:
        for child in self.children:
            if child.proc and child.proc.poll() is None:
                child.proc.terminate()
        for child in self.children:
            if child.proc:
                try:
                    child.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None
