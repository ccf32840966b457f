"""The console's two backends, Redis and the model registry, either of which may be down.

Every read goes through :class:`RedisHandle`, which turns a lost connection into
RedisUnavailable (one line, password redacted) and reconnects on the next request, so a page
says "Redis is unreachable" while it is and recovers by itself when it returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import redis

from forensics.config import Settings
from forensics.errors import RedisUnavailable
from forensics.redisconn import EmbeddedRedis, connect, redact

T = TypeVar("T")
_CONNECT_TIMEOUT_S = 2.0
_SOCKET_TIMEOUT_S = 5.0  # above the feed's 1 s XREAD block


def redis_url(settings: Settings) -> str:
    """The configured URL, else the embedded server's socket in state_dir (never started here)."""
    return settings.redis.url or EmbeddedRedis(settings.state_dir).url


class RedisHandle:
    """A lazily (re)connected client; :meth:`run` maps connection errors to RedisUnavailable."""

    def __init__(self, url: str):
        self.url = url
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()

    def client(self) -> redis.Redis:
        with self._lock:
            if self._client is None:
                self._client = connect(self.url, connect_timeout=_CONNECT_TIMEOUT_S, socket_timeout=_SOCKET_TIMEOUT_S)
            return self._client

    def run(self, fn: Callable[[redis.Redis], T]) -> T:
        try:
            return fn(self.client())
        except (redis.ConnectionError, redis.TimeoutError, OSError) as err:
            with self._lock:
                self._client = None
            raise RedisUnavailable(f"Redis at {redact(self.url)} is unreachable: {err}") from None

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
