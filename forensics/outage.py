"""A lost Redis connection as a state, not a crash.

Every loop that talks to Redis (file ingest, live senders, detect, lock renewal) catches
:data:`REDIS_DOWN` errors and asks an :class:`Outage` how long to wait. The outage is logged once
when it starts (with the error) and once when it ends (with its duration and retries), and the
waits grow exponentially with jitter up to a cap (redis-py's ``ExponentialWithJitterBackoff``),
so many workers do not reconnect in lockstep and a long outage costs at most one try per cap.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff

from forensics.redact import redact

# Errors that mean "Redis is not there right now" (retry later), as opposed to a bad command.
# Errors of a Redis that is away, restarting or failing over (a cluster promotes a replica within
# seconds): the caller waits and retries; what it had not acknowledged stays pending meanwhile.
# A demoted master answers writes with READONLY (a failover, Sentinel's or a cluster's, or a manual
# REPLICAOF): the loop waits until its address is a master again (or the client learns the new one).
# ClusterError is redis-py's "TTL exhausted" (redirections and reconnects during a topology change);
# RedisClusterException is what re-learning the layout raises while no node answers or the slots are
# not yet covered. It is also what a command spanning two slots raises (a bug, not an outage): that
# would show as an outage logged with its message, and the loop stays alive.
REDIS_DOWN: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterError,
    redis.exceptions.RedisClusterException,
    ConnectionError,
)


class Outage:
    """Tracks one loop's connection to Redis. Not thread-safe: one per loop.

    ``base_s``/``cap_s``: the first retry waits up to ``base_s``·2 s, later ones up to ``cap_s`` s.
    """

    def __init__(self, what: str, log: Any, *, base_s: float = 0.1, cap_s: float = 5.0):
        self.what = what
        self.log = log
        self.backoff = ExponentialWithJitterBackoff(cap=cap_s, base=base_s)
        self.failures = 0
        self.since: float | None = None  # monotonic start of the current outage
        self.outages = 0  # outages seen by this loop

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, err: BaseException) -> float:
        """Note a failed call; returns seconds to wait before the next try (>= 10 ms)."""
        if self.since is None:
            self.since = time.monotonic()
            self.outages += 1
            self.log.warning("lost the connection to Redis; retrying with backoff", what=self.what,
                             error=redact(f"{type(err).__name__}: {err}"))  # fmt: skip
        self.failures += 1
        return max(0.01, self.backoff.compute(self.failures))

    def ok(self) -> None:
        """Note a successful call; logs the end of an outage with its duration."""
        if self.since is None:
            return
        self.log.info("connected to Redis again", what=self.what, down_s=round(time.monotonic() - self.since, 2),
                      retries=self.failures)  # fmt: skip
        self.since = None
        self.failures = 0

    def wait(self, err: BaseException, stop: threading.Event | None = None) -> bool:
        """``failed(err)`` then sleep the backoff (returns early, True, if ``stop`` is set)."""
        delay = self.failed(err)
        if stop is None:
            time.sleep(delay)
            return False
        return stop.wait(delay)
