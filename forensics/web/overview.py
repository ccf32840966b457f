"""What the Overview page shows: sources, the detect group, dead letters, recent alerts, the model."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from forensics.alerts import parse_alert
from forensics.config import Settings
from forensics.registry import MANIFEST, Registry
from forensics.sources import source_rows
from forensics.streams import DETECT_GROUP, Keys, backlog
from forensics.web.reports import report_files

RECENT_ALERTS = 200  # alerts counted by kind on the overview


def detect_status(r: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Backlog, consumers (name, pending, idle ms) and dead letters (count, the last 5 errors)."""
    out: dict[str, Any] = {"backlog": 0, "consumers": [], "dead": r.xlen(keys.dead), "dead_recent": []}
    if r.exists(keys.frames):
        out["backlog"] = backlog(r, keys.frames)
        try:
            out["consumers"] = [
                {"name": c["name"].decode() if isinstance(c["name"], bytes) else c["name"],
                 "pending": int(c["pending"]), "idle_ms": int(c["idle"])}
                for c in r.xinfo_consumers(keys.frames, DETECT_GROUP)
            ]  # fmt: skip
        except redis.ResponseError:  # no group yet: no detect worker has started
            pass
    for entry_id, fields in r.xrevrange(keys.dead, count=5):
        out["dead_recent"].append({
            "id": entry_id.decode(), "error": fields.get(b"error", b"").decode(errors="replace")[:300],
            "origin": fields.get(b"origin", b"").decode(errors="replace"),
            "deliveries": int(fields.get(b"deliveries", b"0") or 0),
        })  # fmt: skip
    return out


def alert_counts(r: redis.Redis, keys: Keys, n: int = RECENT_ALERTS) -> dict[str, Any]:
    """Alerts in the stream, and the kinds of the last ``n``."""
    kinds: dict[str, int] = {}
    for _id, fields in r.xrevrange(keys.alerts, count=n):
        try:
            kind = parse_alert(fields.get(b"event", b""))["kind"]
        except ValueError:
            continue
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"total": r.xlen(keys.alerts), "recent": n, "recent_by_kind": kinds}


def announced_model(r: redis.Redis, keys: Keys) -> dict[str, Any] | None:
    raw = r.get(keys.model)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def serving_model(reg: Registry) -> dict[str, Any]:
    """The current version from the registry (manifest read, not verified), with provenance and reports.

    ``ok`` is False with an ``error`` when the registry folder cannot be read.
    """
    if not reg.root.is_dir():
        return {"ok": False, "error": f"model registry {reg.root} does not exist or is not a folder"}
    try:
        cur = reg.current()
        manifest = json.loads((reg.root / cur / MANIFEST).read_text()) if cur else {}
    except (OSError, ValueError) as err:
        return {"ok": False, "error": f"cannot read the model registry {reg.root}: {err}"}
    metrics = manifest.get("metrics") if isinstance(manifest.get("metrics"), dict) else {}
    return {
        "ok": True, "current": cur, "created_at": manifest.get("created_at"), "input_size": manifest.get("input_size"),
        "parent": manifest.get("parent"), "provenance": manifest.get("provenance"),
        "sha256": (manifest.get("files") or {}).get("model.onnx"),
        "video_auc": metrics.get("clean_video_auc", metrics.get("clean_auc")),
        "reports": report_files(manifest),
    }  # fmt: skip


def overview(r: redis.Redis, settings: Settings) -> dict[str, Any]:
    """The Redis half of the overview (the registry half is :func:`serving_model`)."""
    keys = Keys(settings.redis.prefix)
    return {
        "sources": source_rows(r, settings),
        "detect": detect_status(r, keys),
        "alerts": alert_counts(r, keys),
        "announced_model": announced_model(r, keys),
        "time": time.time(),
    }
