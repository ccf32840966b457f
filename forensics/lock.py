"""A Redis lock with expiry and renewal, so only one retraining runs at a time across machines.

``SET key token NX PX ttl`` takes it; a background thread renews it every ``ttl/3`` with a Lua
script that extends the expiry only while the key still holds *our* token; release deletes it the
same way. If the holder dies, the key expires after ``ttl`` and another machine may take over.

A renewal that finds the key gone or someone else's token means the lock was lost (the process
stalled longer than ``ttl``, or an operator deleted the key): :attr:`RedisLock.lost` is set and
:meth:`RedisLock.check` raises :class:`LockLost`, which the run checks between steps so it stops
before doing anything another holder might also be doing (training on, promoting).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Any

import redis

from forensics.errors import ForensicsError
from forensics.logs import get_logger
from forensics.outage import REDIS_DOWN, Outage

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LockHeld(ForensicsError):
    """Another process holds the lock."""


class LockLost(ForensicsError):
    """The lock expired or was taken while we held it."""


class RedisLock:
    """Use as a context manager; ``ttl_s`` is the expiry after the last renewal, seconds."""

    def __init__(self, r: redis.Redis, key: str, *, ttl_s: float = 60.0, what: str = "retraining"):
        self.r = r
        self.key = key
        self.ttl_ms = max(1000, int(ttl_s * 1000))
        self.what = what
        # The token says who holds it, for the LockHeld message; uniqueness comes from the uuid.
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        self.token = json.dumps({**self.owner, "id": uuid.uuid4().hex}, separators=(",", ":"))
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renew = r.register_script(_RENEW)
        self._release = r.register_script(_RELEASE)
        self.log = get_logger(lock=key)

    def acquire(self) -> None:
        """Take the lock or raise LockHeld naming the holder; starts the renewal thread."""
        if not self.r.set(self.key, self.token, nx=True, px=self.ttl_ms):
            raise LockHeld(f"another {self.what} is running: {self.key} is held by {self.holder()}; try again later")
        self.lost.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name="lock-renewal", daemon=True)
        self._thread.start()

    def holder(self) -> str:
        """'host pid N, expires in S s' of the current holder, or 'nobody'."""
        raw, ttl = self.r.get(self.key), self.r.pttl(self.key)
        if raw is None:
            return "nobody"
        try:
            who: dict[str, Any] = json.loads(raw)
            name = f"{who.get('host')} pid {who.get('pid')}"
        except (ValueError, AttributeError):
            name = repr(raw[:40])
        return f"{name}, expires in {max(0, ttl) / 1000:.0f} s"

    def _renew_loop(self) -> None:
        period = self.ttl_ms / 3000
        # A lost connection is retried sooner than the period (backoff capped at a third of it)
        # until the expiry could have passed; then the renewal finds the key gone: "lock lost".
        outage = Outage(f"lock renewal ({self.key})", self.log, cap_s=max(0.1, period / 3))
        delay = period
        while not self._stop.wait(delay):
            try:
                ok = self._renew(keys=[self.key], args=[self.token, self.ttl_ms])
            except REDIS_DOWN as err:
                delay = outage.failed(err)
                continue
            outage.ok()
            delay = period
            if not ok:
                self.log.error("lock lost", key=self.key)
                self.lost.set()
                return

    def check(self) -> None:
        """Raise LockLost if the lock is no longer ours (checked by the run between steps)."""
        if self.lost.is_set() or self.r.get(self.key) != self.token.encode():
            self.lost.set()
            raise LockLost(f"the {self.what} lock {self.key} was lost (expired or taken over); this run stopped")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self._release(keys=[self.key], args=[self.token])
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # it expires on its own

    def __enter__(self):  # -> Self (3.11+)
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
