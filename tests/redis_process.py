"""A real redis-server on a fixed port with append-only persistence (appendfsync always) that tests
SIGKILL or SIGTERM and start again on the same port: Redis restarts under running workers. It is the one
launcher, :class:`forensics.redisconn.EmbeddedRedis`, with a kill switch."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from forensics.redisconn import EmbeddedRedis


class RedisProcess:
    def __init__(self, folder: Path, port: int):
        self.folder = folder
        self.server = EmbeddedRedis(folder, port=port, persist=True, fsync="always")
        self.url = self.server.url

    def start(self) -> float:
        """Start (again, on the same port and data); returns the unix time it answered."""
        self.server.start(timeout=20)
        return time.time()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final flush."""
        self.server.proc.send_signal(signal.SIGKILL)
        self.server.proc.wait(10)
        self.server.proc = None

    def terminate(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        self.server.proc.send_signal(signal.SIGTERM)
        self.server.proc.wait(10)
        self.server.proc = None

    def stop(self) -> None:
        self.server.stop()
