"""Per-frame fake probability per face track, for a verdict page, read back from the results stream.

The detect worker writes one results entry per scored batch (fields frame, pts, track, fake_prob,
mahalanobis, anomalous, box). A file's timeline is every entry of its source up to its verdict (the
scan stops at the file's first batch); a live episode's is the entries of its source from
``LIVE_BEFORE_S`` before the alert to ``LIVE_AFTER_S`` after it. Scans are bounded.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from forensics.streams import Keys

LIVE_BEFORE_S = 60.0
LIVE_AFTER_S = 30.0
FILE_HORIZON_S = 6 * 3600.0  # a file's batches are not older than this before its verdict
_CHUNK = 1000
_SCAN_LIMIT = 50_000


def timeline(r: redis.Redis, keys: Keys, alert: dict[str, Any]) -> dict[str, Any]:
    """{"x": "pts"|"frame", "tracks": {track: {"x": [...], "frame": [...], "prob": [...], "anomalous": [...]}},
    "batches": n, "complete": bool, "scores": policy}; prob is float in [0,1] (0/1 decisions under the
    ``label`` policy), x in seconds of video (pts) or frames. Scores are shown as published (disclosed)."""
    source = str(alert.get("source"))
    created = float(alert.get("created_ts") or 0.0)
    is_file = alert.get("kind") == "verdict"
    hi = created + (1.0 if is_file else LIVE_AFTER_S)
    lo = created - (FILE_HORIZON_S if is_file else LIVE_BEFORE_S)
    needle = json.dumps(source).encode()
    last = f"{int(hi * 1000)}-18446744073709551615"
    crops: list[list] = []
    batches, scanned, complete = set(), 0, not is_file
    policy = "full"  # alerts.scores of the detect worker that wrote the entries (forensics/disclosure.py)
    while scanned < _SCAN_LIMIT:
        entries = r.xrevrange(keys.results, max=last, min=f"{int(lo * 1000)}-0", count=_CHUNK)
        for entry_id, fields in entries:
            scanned += 1
            raw = fields.get(b"event", b"")
            if b'"source":' + needle not in raw:
                continue
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            if ev.get("source") != source or ev.get("seq") in batches:
                continue  # a redelivered batch is written twice
            batches.add(ev.get("seq"))
            policy = ev.get("scores", policy)
            crops.extend(ev.get("crops") or [])
        if entries:
            last = "(" + entries[-1][0].decode()
        if len(entries) < _CHUNK or (is_file and 0 in batches):
            complete = complete or 0 in batches
            break
    use_pts = bool(crops) and all(c[1] is not None for c in crops)
    tracks: dict[str, dict[str, list]] = {}
    for frame, pts, track, prob, _maha, anomalous, _box in sorted(crops, key=lambda c: (c[0], str(c[2]))):
        t = tracks.setdefault(str(track), {"x": [], "frame": [], "prob": [], "anomalous": []})
        t["x"].append(round(pts, 3) if use_pts else frame)
        t["frame"].append(frame)
        t["prob"].append(prob)
        t["anomalous"].append(int(anomalous))
    return {"x": "pts" if use_pts else "frame", "tracks": tracks, "batches": len(batches), "complete": complete,
            "scores": policy}  # under "label", prob is each crop's 0/1 FAKE decision, not a probability
