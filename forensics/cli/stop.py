"""Clean shutdown of worker loops on SIGTERM or SIGINT."""

from __future__ import annotations

import signal
import threading


def stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for clean shutdown of worker loops."""
    stop = threading.Event()

    def _handler(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop
