"""Redis Streams helpers: key names, consumer groups, backpressure, reclaim and dead letters.

Delivery is at-least-once: an entry is acknowledged only after its results are written, an
entry left pending by a dead consumer is reclaimed by a live one (XAUTOCLAIM), and after
``max_deliveries`` an entry is moved to the dead-letter stream with its error. Consumers must
therefore tolerate seeing an entry twice (alert ids are deterministic for that reason).
Nothing here trims a stream that has unacknowledged entries.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

import redis

DETECT_GROUP = "detect"


class Keys:
    """Names of every Redis key, under one prefix. Nothing else builds a key name."""

    def __init__(self, prefix: str = "forensics"):
        self.prefix = prefix
        self.frames = f"{prefix}:frames"  # stream of FrameBatches, group "detect"
        self.results = f"{prefix}:results"  # stream of per-batch scores
        self.alerts = f"{prefix}:alerts"  # stream + pub/sub channel of alerts
        self.dead = f"{prefix}:dead"  # stream: entries that failed N deliveries
        self.model = f"{prefix}:model"  # key + channel: current model version
        self.errors = f"{prefix}:errors"  # hash: delivery errors per entry id (detect)
        self.labels = f"{prefix}:labels"  # hash: alert id -> analyst's label record
        self.retrain_lock = f"{prefix}:retrain:lock"  # one retraining at a time
        self.retrain_last = f"{prefix}:retrain:last"  # the last run's id and start
        self.retrain_refine = f"{prefix}:retrain:refine"  # the adversarial radius refinement state

    def source(self, source_id: str) -> str:
        """Hash: a source's state and counters (forensics.sources)."""
        return f"{self.prefix}:sources:{source_id}"

    def ingest_progress(self, file_key: str) -> str:
        """Hash: how far a dropped file's ingestion got."""
        return f"{self.prefix}:ingest:{file_key}"

    def alert_marker(self, alert_id: str) -> str:
        """Key: set once an alert id was published (writers deduplicate on it)."""
        return f"{self.prefix}:alert-ids:{alert_id}"

    def evidence(self, source: str) -> str:
        """Hash: a source's evidence crops (PNG) by frame and track."""
        return f"{self.prefix}:crops:{source}"

    def label_crops(self, alert_id: str) -> str:
        """Hash: the crops kept with an analyst's label, for retraining."""
        return f"{self.prefix}:labels:crops:{alert_id}"

    def aggregate(self, source: str) -> str:
        """Hash: a file source's per-batch scores until its verdict."""
        return f"{self.prefix}:agg:{source}"

    def window(self, source: str) -> str:
        """Sorted set: a live source's recent scores (the sliding window)."""
        return f"{self.prefix}:win:{source}"

    def live_state(self, source: str) -> str:
        """Hash: a live source's alert state (hysteresis)."""
        return f"{self.prefix}:live:{source}"


@dataclass
class Entry:
    id: bytes
    fields: dict[bytes, bytes]
    deliveries: int = 1


def ensure_group(r: redis.Redis, stream: str, group: str = DETECT_GROUP) -> None:
    """Create the consumer group (and the stream) if missing; reading starts at the first entry."""
    try:
        r.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as err:
        if "BUSYGROUP" not in str(err):
            raise


def backlog(r: redis.Redis, stream: str, group: str = DETECT_GROUP, cap: int = 100_000) -> int:
    """Entries of ``stream`` the group has not acknowledged: pending plus not yet delivered.

    Uses the group's ``lag`` (Redis >= 7); on older servers counts undelivered entries
    with XRANGE, up to ``cap``.
    """
    for g in r.xinfo_groups(stream):
        if _s(g["name"]) != group:
            continue
        pending = int(g["pending"])
        lag = g.get("lag")
        if lag is None:
            last = _s(g["last-delivered-id"])
            lag = len(r.xrange(stream, min=f"({last}", max="+", count=cap))
        return pending + int(lag)
    return int(r.xlen(stream))


def wait_below_high_water(
    r: redis.Redis,
    stream: str,
    high_water: int,
    group: str = DETECT_GROUP,
    *,
    poll: float = 0.2,
    stop: threading.Event | None = None,
) -> float:
    """Block while the group's backlog is at or over ``high_water``; returns seconds waited.

    File sources use this: they wait, and lose nothing. Returns early if ``stop`` is set.
    """
    t0 = time.monotonic()
    while backlog(r, stream, group) >= high_water:
        if stop is not None and stop.wait(poll):
            break
        if stop is None:
            time.sleep(poll)
    return time.monotonic() - t0


def read_group(
    r: redis.Redis, stream: str, consumer: str, *, count: int, block_ms: int, group: str = DETECT_GROUP
) -> list[Entry]:
    """New entries for this consumer (XREADGROUP ... >)."""
    reply = r.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms)
    out = []
    for _name, entries in reply or []:
        for entry_id, fields in entries:
            if fields is not None:  # None: entry deleted while pending
                out.append(Entry(entry_id, fields))
    return out


def ack(r: redis.Redis, stream: str, ids: list[bytes], group: str = DETECT_GROUP, *, delete: bool = False) -> None:
    """Acknowledge entries; with ``delete``, also remove them (only when no other group reads the stream)."""
    if not ids:
        return
    pipe = r.pipeline(transaction=True)
    pipe.xack(stream, group, *ids)
    if delete:
        pipe.xdel(stream, *ids)
    pipe.execute()


def reclaim_stale(
    r: redis.Redis, stream: str, consumer: str, *, min_idle_ms: int, count: int = 64, group: str = DETECT_GROUP
) -> list[Entry]:
    """Take over entries pending longer than ``min_idle_ms`` (XAUTOCLAIM), with their delivery counts."""
    reply = r.xautoclaim(stream, group, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count)
    claimed = [(eid, f) for eid, f in reply[1] if f is not None]
    if not claimed:
        return []
    counts = {}
    for p in r.xpending_range(stream, group, min=claimed[0][0], max=claimed[-1][0], count=len(claimed) * 4 + 16):
        counts[p["message_id"]] = int(p["times_delivered"])
    return [Entry(eid, f, counts.get(eid, 1)) for eid, f in claimed]


def dead_letter(
    r: redis.Redis, keys: Keys, entry: Entry, error: str, group: str = DETECT_GROUP, stream: str | None = None,
    *, maxlen: int = 10_000, max_meta: int = 64 * 1024,
) -> None:
    """Move an entry to the dead-letter stream with its error, and acknowledge it.

    The dead letter keeps the entry's fields (``v``, ``meta``, each cut at ``max_meta`` bytes) and
    the error, never the pixels (``data`` is replaced by its length, ``data_bytes``); the stream
    is capped near ``maxlen`` entries.
    """
    stream = stream or keys.frames
    fields: dict[Any, Any] = {}
    for k, v in entry.fields.items():
        name = k if isinstance(k, bytes) else str(k).encode()
        if name == b"data":
            fields[b"data_bytes"] = str(len(v)).encode()
        else:
            fields[name] = v[:max_meta]
    fields[b"error"] = error.encode()
    fields[b"origin"] = f"{stream}/{entry.id.decode()}".encode()
    fields[b"deliveries"] = str(entry.deliveries).encode()
    pipe = r.pipeline(transaction=True)
    pipe.xadd(keys.dead, fields, maxlen=maxlen, approximate=True)
    pipe.xack(stream, group, entry.id)
    pipe.xdel(stream, entry.id)
    pipe.execute()


def prune_idle_consumers(
    r: redis.Redis, stream: str, *, idle_ms: int, keep: str | None = None, group: str = DETECT_GROUP
) -> list[str]:
    """Delete the group's consumers idle for ``idle_ms`` with no pending entries (except ``keep``).

    A consumer with pending entries is kept: its entries are reclaimed first, then it goes.
    """
    removed = []
    for c in r.xinfo_consumers(stream, group):
        name = _s(c["name"])
        if name != keep and int(c["pending"]) == 0 and int(c["idle"]) >= idle_ms:
            r.xgroup_delconsumer(stream, group, name)
            removed.append(name)
    return removed


def publish_json(r: redis.Redis, stream: str, event: Mapping[str, Any], *, maxlen: int | None = None) -> bytes:
    """XADD a JSON event as field ``event`` (and PUBLISH it on the channel of the same name)."""
    payload = json.dumps(event, separators=(",", ":"), allow_nan=False)
    pipe = r.pipeline(transaction=True)
    pipe.xadd(stream, {"event": payload}, maxlen=maxlen, approximate=True)
    pipe.publish(stream, payload)
    entry_id, _ = pipe.execute()
    return entry_id


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
