"""A live source's state machine (locked, checked transitions) and its reconnect backoff."""

from __future__ import annotations

import collections
import enum
import random
import threading
import time
from collections.abc import Callable, Iterable


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
RUNNING = frozenset(set(SourceState) - {SourceState.STOPPED})


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
