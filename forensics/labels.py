"""Analysts' verdicts on alerts (``forensics label ALERT_ID real|fake``), kept in Redis for retraining.

``<prefix>:labels`` is a hash of alert id -> JSON {alert_id, label, by, at, kind, source, model,
crops, crop_status}. The alert's face crops are copied at labelling time from the detect worker's
evidence (kept only ``detect.evidence_ttl_s``) to ``<prefix>:labels:crops:<alert_id>`` (a hash of
PNGs) kept ``retrain.label_crop_ttl_s``, so a verdict given late in the evidence's life still
yields a training crop. Alerts with a face in ``evidence`` give that crop; file verdicts carry
no single face and give the evidence crops kept for their source. Crops are PNG bytes decoded
with OpenCV, never unpickled.
"""

from __future__ import annotations

import getpass
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from forensics.alerts import AlertNotFound, decode_crop_png, evidence_png, find_alert
from forensics.errors import ForensicsError
from forensics.streams import Keys

LABELS = {"real": 0, "fake": 1}
_MAX_VERDICT_CROPS = 32


def _alert_pngs(r: redis.Redis, keys: Keys, alert: dict[str, Any]) -> dict[str, bytes]:
    """Evidence PNGs of an alert, by field; empty if they have expired."""
    if isinstance(alert.get("evidence"), dict):
        try:
            return {"evidence": evidence_png(r, keys, alert)}
        except AlertNotFound:
            return {}
    found = r.hgetall(keys.evidence(str(alert.get("source"))))
    return {k.decode(): v for k, v in sorted(found.items())[:_MAX_VERDICT_CROPS]}


def record_label(r: redis.Redis, keys: Keys, alert_id: str, label: str, *, by: str | None = None,
                 crop_ttl_s: int = 90 * 24 * 3600) -> dict[str, Any]:  # fmt: skip
    """Record an analyst's verdict on ``alert_id``; raises ForensicsError (one line) for a bad id or label.

    Labelling the same alert again replaces the earlier verdict (the record says who and when).
    """
    if label not in LABELS:
        raise ForensicsError(f"label must be real or fake, got {label!r}")
    alert = find_alert(r, keys, alert_id)
    pngs = _alert_pngs(r, keys, alert)
    record = {
        "alert_id": alert_id, "label": label, "by": by or getpass.getuser(), "at": time.time(),
        "kind": alert.get("kind"), "source": alert.get("source"), "model": alert.get("model"),
        "crops": len(pngs), "crop_status": "kept" if pngs else "expired",
    }  # fmt: skip
    pipe = r.pipeline(transaction=True)
    if pngs:
        ck = keys.label_crops(alert_id)
        pipe.delete(ck)
        pipe.hset(ck, mapping=pngs)
        pipe.expire(ck, crop_ttl_s)
    pipe.hset(keys.labels, alert_id, json.dumps(record, separators=(",", ":")))
    pipe.execute()
    return record


@dataclass
class LabelledCrops:
    record: dict[str, Any]
    images: np.ndarray | None  # uint8 [K, S, S, 3] RGB, or None when unusable
    problem: str | None = None  # why the crops cannot be used


def labelled_crops(r: redis.Redis, keys: Keys, size: int) -> list[LabelledCrops]:
    """Every recorded verdict with its crops at ``size`` px (uint8 RGB), or the reason they are unusable."""
    out = []
    for alert_id, raw in sorted(r.hgetall(keys.labels).items()):
        try:
            record = json.loads(raw)
        except ValueError:
            out.append(LabelledCrops({"alert_id": alert_id.decode()}, None, "malformed label record"))
            continue
        pngs = r.hgetall(keys.label_crops(alert_id.decode()))
        if not pngs:
            out.append(LabelledCrops(record, None, "crop expired before labelling or retention ended"))
            continue
        images, problem = [], None
        for _field, png in sorted(pngs.items()):
            rgb = decode_crop_png(png)
            if rgb is None:
                problem = "a stored crop is not a decodable PNG"
                break
            if rgb.shape[:2] != (size, size):
                problem = f"crop is {rgb.shape[1]}x{rgb.shape[0]} px, the model takes {size} px"
                break
            images.append(rgb)
        out.append(LabelledCrops(record, None if problem else np.stack(images), problem))
    return out
