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

import cv2
import numpy as np
import redis

from forensics.errors import ForensicsError
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
        marker = self.keys.alert_marker(alert["alert_id"])
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


# ---- reading alerts and their evidence back (explain, labelling) ----------------------------


class AlertNotFound(ForensicsError, LookupError):
    """No alert with this id in the alerts stream (or its evidence crop has expired)."""


def find_alert(r: redis.Redis, keys: Keys, alert_id: str, *, chunk: int = 500) -> dict[str, Any]:
    """The alert with ``alert_id``, searched newest first in the alerts stream; raises AlertNotFound."""
    needle = json.dumps(alert_id)[1:-1].encode()  # a cheap substring test before parsing JSON
    last = "+"
    while True:
        entries = r.xrevrange(keys.alerts, max=last, min="-", count=chunk)
        for entry_id, fields in entries:
            raw = fields.get(b"event", b"")
            if needle in raw:
                try:
                    event = parse_alert(raw)
                except ValueError:
                    continue
                if event.get("alert_id") == alert_id:
                    return event
        if len(entries) < chunk:
            raise AlertNotFound(f"no alert {alert_id!r} in {keys.alerts} (trimmed, or never published)")
        last = "(" + entries[-1][0].decode()


def evidence_field(frame: int, track: int | None) -> str:
    return f"{frame}:{track}"


def encode_crop_png(rgb: np.ndarray) -> bytes | None:
    """uint8 [S,S,3] RGB crop -> lossless PNG bytes (None if OpenCV cannot encode it)."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return png.tobytes() if ok else None


def decode_crop_png(png: bytes) -> np.ndarray | None:
    """PNG bytes of :func:`encode_crop_png` -> uint8 [S,S,3] RGB (None if they do not decode)."""
    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def evidence_png(r: redis.Redis, keys: Keys, alert: dict[str, Any]) -> bytes:
    """The PNG of the face crop an alert's ``evidence`` points at; raises AlertNotFound if gone."""
    ev = alert.get("evidence")
    if not isinstance(ev, dict) or "frame" not in ev:
        raise AlertNotFound(f"alert {alert.get('alert_id')!r} ({alert.get('kind')}) carries no face evidence")
    png = r.hget(keys.evidence(str(alert["source"])), evidence_field(int(ev["frame"]), ev.get("track")))
    if png is None:
        raise AlertNotFound(
            f"the evidence crop of alert {alert['alert_id']!r} has expired or was never kept "
            f"(detect.evidence_ttl_s sets how long crops are kept)"
        )
    return png
