"""Alerts as the console lists them: newest first, filtered, each with its analyst label if any."""

from __future__ import annotations

import json
import re
from typing import Any

import redis

from forensics.alerts import parse_alert
from forensics.streams import Keys

MAX_PAGE = 500
_SCAN_CHUNK = 500
_SCAN_LIMIT = 20_000  # entries looked at for one filtered page, so a rare filter stays bounded
_CROP_FIELD = re.compile(r"^\d{1,9}:(\d{1,9}|None)$")
MAX_CROPS = 32


def labels_for(r: redis.Redis, keys: Keys, alert_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not alert_ids:
        return {}
    out = {}
    for aid, raw in zip(alert_ids, r.hmget(keys.labels, alert_ids)):
        if raw:
            try:
                out[aid] = json.loads(raw)
            except ValueError:
                continue
    return out


def list_alerts(r: redis.Redis, keys: Keys, *, kind: str | None = None, source: str | None = None,
                before: str | None = None, limit: int = 100) -> dict[str, Any]:  # fmt: skip
    """Up to ``limit`` alerts older than stream id ``before`` (default: the newest), newest first.

    Returns {"alerts": [{"id": stream id, "alert": {...}, "label": {...}|None}], "next": id|None}.
    ``source`` matches a substring of the source id.
    """
    limit = max(1, min(limit, MAX_PAGE))
    out: list[dict[str, Any]] = []
    last = f"({before}" if before else "+"
    seen = 0
    nxt = None
    while len(out) < limit and seen < _SCAN_LIMIT:
        entries = r.xrevrange(keys.alerts, max=last, min="-", count=_SCAN_CHUNK)
        for entry_id, fields in entries:
            seen += 1
            last = "(" + entry_id.decode()
            try:
                alert = parse_alert(fields.get(b"event", b""))
            except ValueError:
                continue
            if (kind and alert["kind"] != kind) or (source and source not in str(alert.get("source"))):
                continue
            out.append({"id": entry_id.decode(), "alert": alert})
            if len(out) == limit:
                nxt = entry_id.decode()
                break
        if len(entries) < _SCAN_CHUNK:
            break
    labels = labels_for(r, keys, [a["alert"]["alert_id"] for a in out])
    for a in out:
        a["label"] = labels.get(a["alert"]["alert_id"])
    return {"alerts": out, "next": nxt}


def list_labels(r: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """Every analyst label (`forensics label` and the console), newest first."""
    rows = []
    for raw in r.hvals(keys.labels):
        try:
            rows.append(json.loads(raw))
        except ValueError:
            continue
    return sorted(rows, key=lambda rec: rec.get("at") or 0, reverse=True)


def crop_fields(r: redis.Redis, keys: Keys, source: str) -> list[str]:
    """Fields (``frame:track``) of the evidence crops kept for ``source``, by frame, at most MAX_CROPS."""
    fields = [f.decode() for f in r.hkeys(keys.evidence(source))]
    fields = [f for f in fields if _CROP_FIELD.match(f)]
    return sorted(fields, key=lambda f: int(f.split(":")[0]))[:MAX_CROPS]


def crop_png(r: redis.Redis, keys: Keys, source: str, field: str) -> bytes | None:
    if not _CROP_FIELD.match(field):
        return None
    return r.hget(keys.evidence(source), field)
