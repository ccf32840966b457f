"""Timestamps as written to Redis hashes and alerts."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def now_iso(ts: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds, of ``ts`` (unix seconds; default: now)."""
    return datetime.fromtimestamp(time.time() if ts is None else ts, timezone.utc).isoformat(timespec="milliseconds")
