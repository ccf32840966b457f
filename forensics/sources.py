"""The source hash ``<prefix>:sources:<id>``, shared by file and live sources: its counter
names, the types of its fields, and the reader behind ``forensics sources``."""

from __future__ import annotations

import redis

from forensics.config import Settings
from forensics.redact import redact
from forensics.streams import Keys

# Why a sample was dropped: the detect group's backlog was over the limit (the live policy),
# the sender could not keep up (overload), Redis was unreachable, or a bug (error).
DROP_REASONS = ("backlog", "overload", "redis", "error")

COUNTERS = (
    "frames_decoded",
    "frames_sampled",
    "frames_dropped",
    *(f"dropped_{r}" for r in DROP_REASONS),
    "no_face_frames",
    "decode_errors",
    "reconnects",
    "connections",
)
# Written by the sender in the same transaction as the XADD, so they match the stream exactly.
SENT_COUNTERS = ("batches_sent", "frames_sent", "images_sent")

INT_FIELDS = {*COUNTERS, *SENT_COUNTERS, "seq", "last_seq", "outages", "down", "pending", "width", "height",
               "max_backlog", "max_pending", "keyframes_only", "batches"}  # fmt: skip
FLOAT_FIELDS = {"fps", "lag_s", "retry_in_s", "last_frame_at", "last_sent_at"}


def source_rows(r: redis.Redis, settings: Settings) -> list[dict]:
    """Every source hash under the prefix (live and file), plus configured live sources never
    started (state ``unknown``), sorted by id. Numbers are ints/floats, the rest strings."""
    keys = Keys.for_settings(settings)
    rows: dict[str, dict] = {}
    for key in r.scan_iter(match=keys.source_pattern, count=500):
        source_id = keys.source_id_of(key.decode())
        row: dict = {"id": source_id}
        for k, v in r.hgetall(key).items():
            name, text = k.decode(), v.decode()
            try:
                row[name] = (
                    int(text) if name in INT_FIELDS else float(text) if name in FLOAT_FIELDS else text
                )
            except ValueError:
                row[name] = text
        rows[source_id] = row
    for cfg in settings.sources:
        rows.setdefault(cfg.id, {"id": cfg.id, "kind": "live", "state": "unknown", "url": redact(cfg.url)})
    return [rows[k] for k in sorted(rows)]
