"""Case reports: one self-contained HTML page (and optionally a PDF) per file or alert, for people.

A verification desk forwards a report, not JSON. A case report holds, for one file or one alert:
the file's identity (sha256, size, container, codec, resolution, duration, creation metadata that
PyAV exposes), when it was received and scored, the verdict with its threshold and what the score
means, per-track fake-probability timelines (an inline SVG, so the base install needs no plotting
library), the crops that drove the verdict, anomaly flags and what they mean, the model that scored
it (version, sha256, training provenance, the headline of its robustness report) and a limitations
paragraph written from the same numbers. Images are data URIs: the page loads nothing.

Building a case (:func:`case_from_scan`, :func:`case_from_alert`, here) and rendering it
(:mod:`forensics.casepage`: timeline, text, HTML, PDF) are apart, so ``forensics report`` stays
small and the web console can render the same page. No torch here: saliency comes in as a callable from the CLI.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import redis

from forensics.alerts import decode_crop_png, encode_crop_png, evidence_field, find_alert
from forensics.config import Settings
from forensics.errors import BadVideo, ForensicsError, ModelError
from forensics.model import LoadedModel
from forensics.registry import Artifact, Registry, sha256_file
from forensics.robustness import headline, load_eval_metrics
from forensics.scan import ScanDetail, scan_file
from forensics.streams import Keys
from forensics.verdicts import CropRecord
from forensics.video import probe

# crop uint8 [S,S,3] RGB -> PNG bytes of a saliency figure (or None); the CLI passes one when the
# trainer extra and the version's torch weights are there.
Explainer = Callable[[np.ndarray], "bytes | None"]


@dataclass
class Case:
    """Everything a case report shows. Built by :func:`case_from_scan` or :func:`case_from_alert`."""

    subject: str  # the file name, or "alert <id>"
    kind: str  # "verdict" (a file) or the alert's kind
    verdict: dict[str, Any]  # the fields of a verdict alert (label, score, threshold, tracks, ...)
    file: dict[str, Any] | None  # file_facts(), None when the file is not at hand
    times: dict[str, str | None]  # received, scored (ISO 8601, UTC)
    records: list[CropRecord]  # every scored crop (the timeline)
    evidence: list[dict[str, Any]]  # the crops that drove the verdict: record fields + PNGs
    model: dict[str, Any]  # model_facts()
    notes: list[str] = field(default_factory=list)  # what is missing from this report, and why
    alert: dict[str, Any] | None = None


# ---- facts ------------------------------------------------------------------------------------


def check_readable(path: Path, settings: Settings):
    """The file's VideoInfo after the checks ingest and scan make; raises BadVideo (one line) if unusable."""
    if not path.is_file():
        raise BadVideo(f"{path}: no such file")
    return probe(path, settings.ingest.limits)


def file_facts(path: str | Path, settings: Settings) -> dict[str, Any]:
    """Identity and technical facts of a video file. Raises BadVideo if it is not a usable video.

    Keys: name, sha256, size_bytes, container, container_long, codec, codec_long, profile, pix_fmt,
    width, height, fps, duration_s, frames, bit_rate, metadata (container and stream tags, e.g.
    creation_time, encoder, major_brand), modified (file mtime, ISO 8601 UTC).
    """
    path = Path(path)
    info = check_readable(path, settings)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        cc = stream.codec_context
        meta = {f"container.{k}": v for k, v in container.metadata.items()}
        meta.update({f"video.{k}": v for k, v in stream.metadata.items()})
        facts = {
            "container": container.format.name, "container_long": container.format.long_name,
            "codec": cc.name, "codec_long": cc.codec.long_name, "profile": cc.profile, "pix_fmt": cc.pix_fmt,
            "bit_rate": container.bit_rate, "audio": [a.codec_context.name for a in container.streams.audio],
        }  # fmt: skip
    st = path.stat()
    return {
        "name": path.name, "sha256": sha256_file(path), "size_bytes": st.st_size,
        "width": info.width, "height": info.height, "fps": info.fps, "duration_s": info.duration,
        "frames": info.frames, **facts, "metadata": dict(sorted(meta.items())),
        "modified": datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip


def model_facts(artifact: Artifact | None, alert_model: dict | None = None) -> dict[str, Any]:
    """The model that scored the case: identity, thresholds, training provenance, robustness headline.

    ``artifact`` None (a version no longer in the registry) keeps what the alert says about it.
    """
    if artifact is None:
        m = alert_model or {}
        return {"version": m.get("version"), "sha256": m.get("sha256"), "available": False}
    man = artifact.manifest
    try:
        train = json.loads((artifact.path / "report" / "metrics.json").read_text())
    except (OSError, ValueError):
        train = {}
    data = train.get("data") or {}
    prov = man.get("provenance") if isinstance(man.get("provenance"), dict) else None
    metrics = load_eval_metrics(artifact.path)
    facts: dict[str, Any] = {
        "version": artifact.version, "sha256": artifact.sha256, "available": True,
        "created_at": man.get("created_at"), "input_size": man.get("input_size"), "parent": man.get("parent"),
        "thresholds": man.get("thresholds", {}), "data_fingerprint": man.get("data_fingerprint"),
        "defence": "defence.npz" in man.get("files", {}),
        "provenance": prov, "synthetic_only": bool(prov and _synthetic_only(prov)),
        "training_data": {k: data[k] for k in ("train_videos", "val_videos", "test_videos", "train_crops",
                                                "val_crops", "test_crops") if k in data},
        "report": str(artifact.path / "report" / "eval" / "report.html") if metrics else None,
        "headline": headline(metrics) if metrics else None,
        "eval_quick": bool(metrics and metrics.get("quick")),
    }  # fmt: skip
    if alert_model and alert_model.get("sha256") and alert_model["sha256"] != artifact.sha256:
        facts["mismatch"] = alert_model["sha256"]
    return facts


def _synthetic_only(prov: dict[str, Any]) -> bool:
    """Whether a manifest's ``provenance`` (issue 15) says the model saw synthetic data alone."""
    if "synthetic_only" in prov:
        return bool(prov["synthetic_only"])
    kinds = prov.get("kinds") or prov.get("sources") or prov.get("data")
    if isinstance(kinds, dict):
        kinds = [k for k, v in kinds.items() if v]
    return isinstance(kinds, list) and bool(kinds) and all(str(k).lower().startswith("synth") for k in kinds)


# ---- building a case ---------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _png(rgb: np.ndarray) -> str | None:
    png = encode_crop_png(rgb)
    return None if png is None else base64.b64encode(png).decode()


def _frame_with_box(frame: np.ndarray, box: list[int], full_width: int) -> np.ndarray:
    """The thumbnail uint8 [h,w,3] with the face box (full-frame pixels) drawn in red."""
    out = frame.copy()
    s = out.shape[1] / max(1, full_width)
    x0, y0, x1, y1 = (int(round(v * s)) for v in box)
    cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), (230, 30, 30), 2)
    return out


def case_from_scan(path: str | Path, settings: Settings, model: LoadedModel, *, explain: Explainer | None = None,
                   keep: int = 6) -> Case:  # fmt: skip
    """Scan a file (the ``forensics scan`` path) and gather its case. Raises BadVideo if unreadable."""
    received = _now()
    facts = file_facts(path, settings)
    detail = ScanDetail(keep=keep)
    verdict = scan_file(path, settings, model, detail)
    evidence = []
    for i, (rec, crop, frame) in enumerate(detail.top):
        ev = _evidence_row(i, rec, crop, model.anomaly_threshold)
        ev["frame_png"] = _png(_frame_with_box(frame, rec.box, facts["width"]))
        evidence.append(ev)
    notes = []
    if evidence and explain is not None:
        _add_saliency(evidence[0], detail.top[0][1], explain, notes)
    elif explain is None and evidence:
        notes.append("Saliency maps need the trainer extra (pip install 'video-forensics[train]') and the "
                     "version's torch weights; not drawn.")  # fmt: skip
    return Case(subject=facts["name"], kind="verdict", verdict=verdict, file=facts,
                times={"received": received, "scored": _now(), "received_note": "report started (file scanned now)"},
                records=detail.records, evidence=evidence, model=model_facts(model.artifact), notes=notes)  # fmt: skip


def _evidence_row(rank: int, rec: CropRecord, crop: np.ndarray | None, anomaly_threshold: float | None) -> dict:
    return {"rank": rank + 1, "frame": rec.frame, "pts": rec.pts, "track": rec.track, "fake_prob": rec.prob,
            "anomaly": rec.anomaly, "anomalous": rec.anomalous, "anomaly_threshold": anomaly_threshold,
            "box": rec.box, "low_quality": list(rec.low_quality), "crop_png": _png(crop) if crop is not None else None,
            "frame_png": None,
            "saliency_png": None}  # fmt: skip


def _add_saliency(ev: dict, crop: np.ndarray, explain: Explainer, notes: list[str]) -> None:
    try:
        png = explain(crop)
    except ForensicsError as err:
        notes.append(f"Saliency not drawn: {err}")
        return
    if png:
        ev["saliency_png"] = base64.b64encode(png).decode()


def records_from_results(r: redis.Redis, keys: Keys, source: str, *, since_ts: float, until_ts: float,
                         chunk: int = 1000) -> list[CropRecord]:  # fmt: skip
    """The scored crops of ``source`` in the results stream between two times (seconds since the epoch)."""
    needle = json.dumps(source).encode()
    out: list[CropRecord] = []
    lo, hi = f"{int(since_ts * 1000)}-0", f"{int(until_ts * 1000)}-99999999"
    while True:
        entries = r.xrange(keys.results, min=lo, max=hi, count=chunk)
        for entry_id, fields in entries:
            raw = fields.get(b"event", b"")
            if needle not in raw:
                continue
            try:
                event = json.loads(raw)
                if event.get("source") == source:
                    lq = event.get("low_quality") or []  # beside the rows since issue 17
                    for i, c in enumerate(event.get("crops", [])):
                        rec = CropRecord.from_json(c)
                        out.append(replace(rec, low_quality=tuple(lq[i])) if i < len(lq) and lq[i] else rec)
            except (ValueError, TypeError, IndexError):
                continue
        if len(entries) < chunk:
            break
        lo = "(" + entries[-1][0].decode()
    # A redelivered batch is written twice: keep one record per (frame, track).
    return sorted({(c.frame, c.track): c for c in out}.values(), key=lambda c: (c.frame, str(c.track)))


def case_from_alert(r: redis.Redis, keys: Keys, alert_id: str, registry: Registry, settings: Settings, *,
                    locate_file: Callable[[dict], Path | None] | None = None,
                    explainer: Callable[[Artifact], Explainer | None] | None = None, keep: int = 6) -> Case:  # fmt: skip
    """The case of an alert from Redis: its verdict, timeline (results stream), kept evidence crops and model.

    ``locate_file(alert)``: the dropped file, when the caller can find it (its facts are then in the
    report). ``explainer(artifact)``: a saliency function for the alert's model, if one is available.
    Raises AlertNotFound (one line) for an unknown id.
    """
    alert = find_alert(r, keys, alert_id)
    file_path = locate_file(alert) if locate_file is not None else None
    source = str(alert.get("source"))
    notes: list[str] = []
    src_state = {k.decode(): v.decode() for k, v in r.hgetall(keys.source(source)).items()}
    created = float(alert.get("created_ts") or time.time())
    received = src_state.get("started_at")
    if alert.get("kind") == "verdict":
        since = _ts(received) - 60 if received else created - 24 * 3600
    else:
        since = created - float(alert.get("window_s") or 60) - 5
    records = records_from_results(r, keys, source, since_ts=since, until_ts=created + 5)
    if not records:
        notes.append("No per-crop scores for this source are left in the results stream (trimmed): no timeline.")
    model = None
    info = alert.get("model") or {}
    try:
        model = registry.load(info.get("version")) if info.get("version") else None
    except ModelError as err:
        notes.append(f"The model that raised the alert cannot be verified here: {err}")
    mfacts = model_facts(model, info)
    a_thr = (mfacts.get("thresholds") or {}).get("defence_crop", (mfacts.get("thresholds") or {}).get("anomaly"))
    # Evidence: the most fake-looking crops whose PNG the detect worker still keeps.
    kept = r.hgetall(keys.evidence(source))
    ranked = sorted(records, key=lambda c: -c.prob)
    ev = alert.get("evidence") or {}
    if isinstance(ev, dict) and "frame" in ev:
        head = CropRecord(int(ev["frame"]), ev.get("pts"), ev.get("track"), float(ev.get("fake_prob") or 0),
                          float(ev.get("mahalanobis") or 0), bool(ev.get("anomalous")), list(ev.get("box") or []),
                          tuple(ev.get("low_quality") or ()))  # fmt: skip
        ranked = [head] + [c for c in ranked if (c.frame, c.track) != (head.frame, head.track)]
    evidence, crops = [], []
    for rec in ranked:
        png = kept.get(evidence_field(rec.frame, rec.track).encode())
        crop = decode_crop_png(png) if png else None
        if crop is None:
            continue
        evidence.append(_evidence_row(len(evidence), rec, crop, a_thr))
        crops.append(crop)
        if len(evidence) >= keep:
            break
    if not evidence and isinstance(ev, dict) and "frame" in ev:
        notes.append("The evidence crops have expired (detect.evidence_ttl_s sets how long they are kept).")
    explain = explainer(model) if (explainer is not None and model is not None) else None
    if evidence and explain is not None:
        _add_saliency(evidence[0], crops[0], explain, notes)
    facts = None
    if file_path is not None:
        try:
            facts = file_facts(file_path, settings)
        except BadVideo as err:
            notes.append(f"The file is not readable here: {err}")
    elif alert.get("kind") == "verdict":
        notes.append(f"The file {alert.get('file')!r} was not found in the done folder: its sha256 and "
                     "container facts are not in this report.")  # fmt: skip
    verdict = {k: v for k, v in alert.items() if k not in ("schema", "alert_id", "kind", "source", "created_at",
                                                           "created_ts", "model")}  # fmt: skip
    if alert.get("kind") == "deepfake":
        verdict.setdefault("label", "FAKE")
    return Case(subject=str(alert.get("file") or source), kind=str(alert.get("kind")), verdict=verdict, file=facts,
                times={"received": received, "scored": alert.get("created_at"),
                       "received_note": "ingest started" if received else None},
                records=records, evidence=evidence, model=mfacts, notes=notes, alert=alert)  # fmt: skip


def _ts(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return time.time() - 24 * 3600
