"""``forensics trainer``: run :func:`trainer.retrain.run_retrain` on a schedule.

The schedule is ``retrain.cron`` (five-field, UTC) when set, else every ``retrain.interval_s``
counted from the last run's *start*, which is kept in Redis (``<prefix>:retrain:last``): a
restarted trainer keeps the rhythm, and trainers on several machines share it. With no recorded
run, an interval schedule runs at once. Trainers may run on many machines; the run's lock makes
sure only one retrains at a time, the others log that the lock is held and wait for the next slot.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import redis

from forensics.config import RetrainSettings, Settings, next_cron_time
from forensics.errors import ForensicsError
from forensics.lock import LockHeld
from forensics.logs import get_logger
from forensics.streams import Keys
from trainer.retrain import run_retrain

RunFn = Callable[..., dict[str, Any]]


def next_run_at(rs: RetrainSettings, last_start: float | None, now: float) -> float:
    """Unix time of the next run: the next cron minute after ``now``, or last start + interval."""
    if rs.cron:
        return next_cron_time(rs.cron, now)
    return now if last_start is None else last_start + rs.interval_s


def last_start(r: redis.Redis, keys: Keys) -> float | None:
    raw = r.get(keys.retrain_last)
    try:
        return float(json.loads(raw)["started_at"]) if raw else None
    except (ValueError, KeyError, TypeError):
        return None


class Scheduler:
    def __init__(self, settings: Settings, r: redis.Redis, *, run: RunFn = run_retrain):
        self.settings = settings
        self.r = r
        self.keys = Keys(settings.redis.prefix)
        self.run_fn = run
        self.log = get_logger()
        self.records: list[dict[str, Any]] = []

    def run(self, stop: threading.Event, *, max_runs: int | None = None) -> None:
        """Loop until ``stop`` is set (or ``max_runs`` runs were attempted)."""
        attempts = 0
        while not stop.is_set() and (max_runs is None or attempts < max_runs):
            at = next_run_at(self.settings.retrain, last_start(self.r, self.keys), time.time())
            self.log.info("next retraining", at=datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds"))
            # Wake at least every minute: another machine's run moves the interval schedule on.
            while not stop.is_set() and time.time() < at:
                stop.wait(min(60.0, max(0.0, at - time.time())))
                if not self.settings.retrain.cron:
                    at = next_run_at(self.settings.retrain, last_start(self.r, self.keys), time.time())
            if stop.is_set():
                break
            attempts += 1
            try:
                self.records.append(self.run_fn(self.settings, self.r, trigger="schedule"))
            except LockHeld as err:
                self.log.info("retraining skipped", reason=str(err))
                # The holder recorded its start; without a record, back off one interval anyway.
                stop.wait(1.0)
            except ForensicsError as err:
                self.log.error("retraining failed", error=str(err))
                if self.settings.retrain.cron is None and last_start(self.r, self.keys) is None:
                    stop.wait(self.settings.retrain.interval_s)
