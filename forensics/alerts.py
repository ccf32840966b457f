"""Alert events: schema, deterministic ids, and exactly-once publication.

Every alert is JSON with ``schema``, ``alert_id``, ``kind``, ``source``, ``created_at`` and
``model`` ({version, sha256} or null), plus kind-specific fields:

- ``verdict``: one per dropped file (label, score, threshold, frames/faces scored, anomaly rate, tracks);
- ``deepfake``: a live source's windowed fake score crossed its threshold (with hysteresis);
- ``anomaly``: features far outside the clean distribution (suspected adversarial/OOD input);
- ``source``: a live source went down or came back.

Ids are deterministic (source + what + sequence), and :class:`AlertWriter` publishes an id at
most once (a Redis ``SET NX`` marker in the same Lua script as the XADD and PUBLISH), so a
redelivered batch or a second worker finishing the same file never alerts twice.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, Iterator

import redis

from forensics.streams import Keys

SCHEMA_VERSION = 1
KINDS = ("verdict", "deepfake", "anomaly", "source")
DEDUPE_TTL_S = 7 * 24 * 3600

_EMIT_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[3])) then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[1])
  redis.call('PUBLISH', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


def make_alert(kind: str, source: str, alert_id: str, *, model: dict | None = None, **fields: Any) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"unknown alert kind {kind!r}")
    return {
        "schema": SCHEMA_VERSION,
        "alert_id": alert_id,
        "kind": kind,
        "source": source,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "created_ts": time.time(),
        "model": model,
        **fields,
    }


class AlertWriter:
    """Publishes alerts to ``<prefix>:alerts`` (stream + channel), each id at most once."""

    def __init__(self, r: redis.Redis, keys: Keys, *, maxlen: int = 100_000, dedupe_ttl: int = DEDUPE_TTL_S):
        self.r = r
        self.keys = keys
        self.maxlen = maxlen
        self.dedupe_ttl = dedupe_ttl
        self._script = r.register_script(_EMIT_ONCE)

    def emit(self, alert: dict[str, Any]) -> bool:
        """True if published now, False if this alert id was already published."""
        payload = json.dumps(alert, separators=(",", ":"), allow_nan=False)
        marker = f"{self.keys.prefix}:alert-ids:{alert['alert_id']}"
        return bool(self._script(keys=[marker, self.keys.alerts], args=[payload, self.maxlen, self.dedupe_ttl]))


def parse_alert(raw: bytes | str) -> dict[str, Any]:
    """An alert from a stream entry's ``event`` field or a channel message."""
    event = json.loads(raw)
    if not isinstance(event, dict) or event.get("schema") != SCHEMA_VERSION or event.get("kind") not in KINDS:
        raise ValueError("not a forensics alert")
    return event


def follow_alerts(r: redis.Redis, keys: Keys, *, since: bytes | str = "$", block_ms: int = 500,
                  until: Any = None) -> Iterator[tuple[bytes, dict[str, Any]]]:  # fmt: skip
    """Yield (entry id, alert) from the alerts stream after ``since`` ("$": from now), forever or
    until ``until()`` is true (checked between reads). Entries that are not alerts are skipped."""
    last = since
    while until is None or not until():
        for _name, entries in r.xread({keys.alerts: last}, count=100, block=block_ms) or []:
            for entry_id, fields in entries:
                last = entry_id
                try:
                    yield entry_id, parse_alert(fields[b"event"])
                except (KeyError, ValueError):
                    continue
