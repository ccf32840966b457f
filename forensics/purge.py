"""``forensics purge``: delete what the daemon keeps about a source, or everything older than a date.

Face crops are biometric personal data. What the daemon keeps in Redis, and for how long (README,
"Privacy: what is stored, where, for how long"):

=====================================  ============================================  ======================
key                                    what                                          kept
=====================================  ============================================  ======================
``<p>:crops:<source>``                 evidence crops (PNG) of alerts, by frame:track  ``detect.evidence_ttl_s``
``<p>:crops-at:<source>``              when each evidence crop was kept (zset)         same
``<p>:labels`` / ``<p>:labels:crops:<alert_id>``  analysts' verdicts / their crops (PNG)  record: until purged; crops ``retrain.label_crop_ttl_s``
``<p>:results`` (stream)               per-crop scores and boxes of every batch      trimmed at 100 000 entries
``<p>:alerts`` (stream + channel)      alerts with their evidence box and scores     trimmed at 100 000 entries
``<p>:agg:<source>``                   a file's per-batch scores until its verdict   deleted at the verdict; 24 h
``<p>:win:<source>``, ``<p>:live:<source>``  a live source's window and alert state  window x 10 + 60 s / until purged
``<p>:ingest:<file key>``              a dropped file's ingest progress              until purged
=====================================  ============================================  ======================

``--source ID`` removes all of these for one source: its keys, its entries in the results and
alerts streams (XDEL), its labels and their crops, and the ingest progress that names it.
``--before DATE`` removes every results and alerts entry, evidence crop, label (with crops)
and live-window member older than DATE; in-flight aggregation (``agg``) carries no time and
expires by itself within 24 h. Alert-id markers (``<p>:alert-ids:*``, ids only, 7 days) are
kept so a redelivered batch cannot publish the same alert again. Source state hashes
(``<p>:sources:<id>``: counters, up/down) hold no face data and are kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import redis

from forensics.errors import ForensicsError
from forensics.streams import Keys

_CHUNK = 1000


def parse_date(text: str) -> float:
    """An ISO date or date-time (naive: UTC) -> Unix seconds; raises ForensicsError (one line)."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ForensicsError(
            f"--before wants an ISO date like 2026-01-31 or 2026-01-31T12:00, got {text!r}"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _stream_source(fields: dict[bytes, bytes]) -> str | None:
    try:
        return str(json.loads(fields[b"event"]).get("source"))
    except (KeyError, ValueError, AttributeError):
        return None


def _entries(r: redis.Redis, stream: str) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
    last = "-"
    while True:
        chunk = r.xrange(stream, min=last, max="+", count=_CHUNK)
        yield from chunk
        if len(chunk) < _CHUNK:
            return
        last = "(" + chunk[-1][0].decode()


def _scan(r: redis.Redis, pattern: str) -> list[bytes]:
    return list(r.scan_iter(match=pattern, count=_CHUNK))


def purge_source(r: redis.Redis, keys: Keys, source: str) -> dict[str, int]:
    """Delete everything kept about ``source``; returns counts of what was removed."""
    out = {"keys": 0, "results": 0, "alerts": 0, "labels": 0}
    own = [keys.evidence(source), keys.evidence_times(source), keys.aggregate(source), keys.window(source),
           keys.live_state(source)]  # fmt: skip
    for k in _scan(r, keys.ingest_progress("*", source)):
        if (r.hget(k, "source") or b"").decode(errors="replace") == source:
            own.append(k.decode())
    out["keys"] = int(r.delete(*own))
    for name, stream in (("results", keys.results), ("alerts", keys.alerts)):
        ids = [i for i, f in _entries(r, stream) if _stream_source(f) == source]
        for k in range(0, len(ids), _CHUNK):
            out[name] += int(r.xdel(stream, *ids[k : k + _CHUNK]))
    out["labels"] = _drop_labels(r, keys, lambda rec: str(rec.get("source")) == source)
    return out


def purge_before(r: redis.Redis, keys: Keys, when: float) -> dict[str, int]:
    """Delete every results/alerts entry, evidence crop, label and live-window member older than
    ``when`` (Unix seconds); returns counts of what was removed."""
    out = {"results": 0, "alerts": 0, "crops": 0, "labels": 0, "window": 0}
    min_id = f"{int(when * 1000)}-0"
    for name, stream in (("results", keys.results), ("alerts", keys.alerts)):
        out[name] = int(r.xtrim(stream, minid=min_id, approximate=False)) if r.exists(stream) else 0
    for tk in _scan(r, keys.per_source_pattern("crops-at")):
        source = tk.decode().rsplit(":crops-at:", 1)[1]
        old = r.zrangebyscore(tk, "-inf", f"({when}")
        if old:
            pipe = r.pipeline(transaction=True)
            pipe.hdel(keys.evidence(source), *old)
            pipe.zrem(tk, *old)
            out["crops"] += int(pipe.execute()[0])
    for wk in _scan(r, keys.per_source_pattern("win")):
        out["window"] += int(r.zremrangebyscore(wk, "-inf", f"({when}"))
    out["labels"] = _drop_labels(r, keys, lambda rec: float(rec.get("at", 0)) < when)
    return out


def _drop_labels(r: redis.Redis, keys: Keys, match) -> int:
    n = 0
    for alert_id, raw in r.hgetall(keys.labels).items():
        try:
            rec: dict[str, Any] = json.loads(raw)
        except ValueError:
            continue
        if match(rec):
            pipe = r.pipeline(transaction=True)
            pipe.hdel(keys.labels, alert_id)
            pipe.delete(keys.label_crops(alert_id.decode()))
            n += int(pipe.execute()[0])
    return n
