"""``forensics up``: every role as a supervised local process, for one machine.

Starts the embedded Redis when no URL is configured and hands its URL to the children.
A child that exits is restarted, within a budget (``max_restarts`` in ``window_s``); past
the budget the supervisor stops everything and says which role kept failing.
"""

from __future__ import annotations

import os
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
from forensics.redisconn import EmbeddedRedis, connect_settings


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    starts: deque = field(default_factory=lambda: deque(maxlen=64))


class Supervisor:
    def __init__(self, settings: Settings, roles: list[tuple[str, list[str]]], *, config: str | None = None,
                 max_restarts: int = 5, window_s: float = 60.0, log_dir: Path | None = None):  # fmt: skip
        self.settings = settings
        self.config = config
        self.children = [Child(name, argv) for name, argv in roles]
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.log_dir = log_dir
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
        """Restart children that exit, until ``stop`` or the restart budget runs out."""
        try:
            while not stop.wait(poll):
                for child in self.children:
                    code = child.proc.poll() if child.proc else None
                    if code is None:
                        continue
                    now = time.monotonic()
                    recent = [t for t in child.starts if now - t < self.window_s]
                    if len(recent) > self.max_restarts:
                        raise ForensicsError(
                            f"role {child.name} exited {len(recent)} times within {self.window_s:.0f} s "
                            f"(last exit status {code}); giving up"
                        )
                    self.log.warning("role exited; restarting", name=child.name, status=code)
                    self._spawn(child)
        finally:
            self.stop()

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
