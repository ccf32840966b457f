"""The retraining lock: redis-py's :class:`redis.lock.Lock` (token, Lua release and renewal), plus a
renewing thread, so only one retraining runs at a time across machines.

The token is JSON naming the holder (host, pid, start) plus a random id, so a refused run can say
who holds the lock. A background thread renews the expiry every ``ttl/3`` (``Lock.reacquire``,
which only extends a lock that still holds *our* token); release deletes it the same way. If the
holder dies, the key expires after ``ttl`` and another machine may take over.

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
from redis.exceptions import LockError
from redis.lock import Lock

from forensics.errors import ForensicsError
from forensics.logs import get_logger
from forensics.outage import REDIS_DOWN, Outage


class LockHeld(ForensicsError):
    """Another process holds the lock."""


class LockLost(ForensicsError):
    """The lock expired or was taken while we held it."""


class RedisLock:
    """Use as a context manager; ``ttl_s`` is the expiry after the last renewal, seconds."""

    def __init__(self, r: redis.Redis, key: str, *, ttl_s: float = 60.0, what: str = "retraining"):
        self.r = r
        self.key = key
        self.ttl_s = max(1.0, float(ttl_s))
        self.what = what
        # The token says who holds it, for the LockHeld message; uniqueness comes from the uuid.
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        self.token = json.dumps({**self.owner, "id": uuid.uuid4().hex}, separators=(",", ":"))
        self.lock = Lock(r, key, timeout=self.ttl_s, blocking=False, thread_local=False)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.log = get_logger(lock=key)

    def acquire(self) -> None:
        """Take the lock or raise LockHeld naming the holder; starts the renewal thread."""
        if not self.lock.acquire(token=self.token):
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
        period = self.ttl_s / 3
        # A lost connection is retried sooner than the period (backoff capped at a third of it)
        # until the expiry could have passed; then the renewal finds the lock gone: "lock lost".
        # The outage is logged once when it starts and once, with its length, when it ends.
        outage = Outage(f"lock renewal ({self.key})", self.log, cap_s=max(0.1, period / 3))
        delay = period
        while not self._stop.wait(delay):
            try:
                self.lock.reacquire()
                outage.ok()
                delay = period
            except REDIS_DOWN as err:
                delay = outage.failed(err)
            except LockError:  # LockNotOwnedError: expired, or someone else's token now
                self.log.error("lock lost", key=self.key)
                self.lost.set()
                return

    def check(self) -> None:
        """Raise LockLost if the lock is no longer ours (checked by the run between steps)."""
        if self.lost.is_set() or not self.lock.owned():
            self.lost.set()
            raise LockLost(f"the {self.what} lock {self.key} was lost (expired or taken over); this run stopped")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self.lock.release()
        except (LockError, redis.ConnectionError, redis.TimeoutError):
            pass  # not ours any more, or unreachable: it expires on its own

    def __enter__(self):  # -> Self (3.11+)
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
