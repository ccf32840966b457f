"""What the detect worker writes once a batch is scored: the results stream, evidence crops, the
per-file aggregate and its verdict, the live windows and their alerts.

:class:`Publishing` is the half of :class:`workers.detect.DetectWorker` that publishes; the other
half (reading, per-entry isolation, scoring, model reloads) is in ``workers/detect.py``. It uses
the worker's ``r``, ``keys``, ``cfg`` (DetectSettings), ``settings``, ``model``, ``alerts``,
``log``, ``stats`` and ``metrics``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from forensics.alerts import encode_crop_png, evidence_field, make_alert
from forensics.disclosure import RESULT_FIELDS, disclose
from forensics.model import LoadedModel
from forensics.verdicts import CropRecord, file_verdict, window_decision
from forensics.wire import FrameBatch

AGG_TTL_S = 24 * 3600  # a file's aggregate hash, if its end never comes
RESULTS_MAXLEN = 100_000
MAX_ERROR_CHARS = 500


class Publishing:
    def _write_result(self, b: FrameBatch, records: list[CropRecord]) -> None:
        event = {
            "source": b.source, "seq": b.seq, "source_kind": b.source_kind,
            "model": self.model.info,
            "crops": [r.row() for r in records],
            "fields": list(RESULT_FIELDS),
            "low_quality": [list(r.low_quality) for r in records],  # beside the rows: their layout is unchanged
            "wall": b.wall[0] if b.wall else None, "scored_at": time.time(),
        }  # fmt: skip
        pol = self.settings.alerts
        event = disclose(event, pol.scores, pol.score_decimals, frame_threshold=self.model.frame_threshold)
        self.r.xadd(self.keys.results, {"event": json.dumps(event, separators=(",", ":"))},
                    maxlen=RESULTS_MAXLEN, approximate=True)  # fmt: skip

    def _keep_evidence(self, b: FrameBatch, records: list[CropRecord], picks: set[int]) -> None:
        """Keep crops ``picks`` of the batch (PNG) as evidence for alerts.

        ``forensics explain ALERT_ID`` and retraining on analysts' labels read them back from
        ``<prefix>:crops:<source>`` (field ``<frame>:<track>``) for ``detect.evidence_ttl_s``.
        Files keep each batch's most fake-looking and most anomalous crop until the verdict,
        then only the ``detect.evidence_per_file`` best; live sources keep only the crops their
        alerts point at.
        """
        if not picks:
            return
        key, times = self.keys.evidence(b.source), self.keys.evidence_times(b.source)
        pipe = self.r.pipeline(transaction=False)
        for i in picks:
            png = encode_crop_png(b.images[i])
            if png is not None:
                field = evidence_field(records[i].frame, records[i].track)
                pipe.hset(key, field, png)
                pipe.zadd(times, {field: b.wall[i] if b.wall else time.time()})
        pipe.expire(key, self.cfg.evidence_ttl_s)
        pipe.expire(times, self.cfg.evidence_ttl_s)
        pipe.execute()

    def _file_step(self, b: FrameBatch | str, seq: int, records: list[CropRecord] | None, lost: str = "") -> None:
        """Add a file's batch ``seq`` (its ``records``; None: dead-lettered with error ``lost``), or
        its end-of-file marker, and finish the file once every batch is in."""
        source = b if isinstance(b, str) else b.source
        key = self.keys.aggregate(source)
        pipe = self.r.pipeline(transaction=True)
        if records is None:
            pipe.hset(key, f"x:{seq}", lost[:MAX_ERROR_CHARS])
        elif b.kind == "eof":
            pipe.hset(key, "eof", json.dumps(b.info))
        else:
            pipe.hset(key, f"b:{seq}", json.dumps([r.to_json() for r in records]))
        pipe.expire(key, AGG_TTL_S)
        pipe.hget(key, "eof")
        pipe.hlen(key)
        *_, eof_raw, n = pipe.execute()
        if eof_raw is None:
            return
        eof = json.loads(eof_raw)
        if n < int(eof.get("batches", 0)) + 1:
            return  # other batches of this file are still with other workers
        self._finish_file(source, key, eof)

    def _finish_file(self, source: str, key: str, eof: dict) -> None:
        fields = self.r.hgetall(key)
        records = [
            CropRecord.from_json(v) for k, raw in sorted(fields.items()) if k.startswith(b"b:") for v in json.loads(raw)
        ]
        lost = sorted(int(k[2:]) for k in fields if k.startswith(b"x:"))
        verdict = file_verdict(records, threshold=self.model.video_threshold, eof=eof,
                               track_anomaly_threshold=self.model.track_threshold)  # fmt: skip
        if lost:
            verdict["batches_lost"] = len(lost)
            verdict["lost_error"] = fields[f"x:{lost[0]}".encode()].decode(errors="replace")
        alert = make_alert("verdict", source, f"{source}:verdict", model=self.model.info,
                           trained_on=self.model.trained_on, **verdict)  # fmt: skip
        if self.alerts.emit(alert):
            self._count_alert("verdict")
            self.log.info("verdict", source=source, file=verdict["file"], label=verdict["label"],
                          score=verdict["score"], faces=verdict["faces_scored"])  # fmt: skip
        rate = verdict.get("anomaly_rate")
        # Per-crop rate, or (defence.npz) a face track whose mean anomaly score is over the track threshold.
        if rate is not None and (rate > self.cfg.anomaly_rate or verdict.get("anomalous_tracks")):
            worst = max(records, key=lambda r: r.anomaly)
            alert = make_alert("anomaly", source, f"{source}:anomaly:file", model=self.model.info,
                               file=verdict["file"], anomaly_rate=rate, rate_threshold=self.cfg.anomaly_rate,
                               anomalous_tracks=verdict["anomalous_tracks"], track_threshold=self.model.track_threshold,
                               evidence=evidence(worst, self.model))  # fmt: skip
            if self.alerts.emit(alert):
                self._count_alert("anomaly")
        self._prune_evidence(source, records)
        self.r.delete(key)

    def _prune_evidence(self, source: str, records: list[CropRecord]) -> None:
        """Keep the file's ``evidence_per_file`` crops with the highest fake probability and
        anomaly (the verdict's and the anomaly alert's evidence are among them); drop the rest."""
        k = self.cfg.evidence_per_file
        by_prob = sorted(records, key=lambda r: -r.prob)[: (k + 1) // 2]
        by_anom = sorted(records, key=lambda r: -r.anomaly)[: k // 2]
        keep = {evidence_field(r.frame, r.track).encode() for r in by_prob + by_anom}
        key = self.keys.evidence(source)
        extra = [f for f in self.r.hkeys(key) if f not in keep]
        if extra:
            self.r.hdel(key, *extra)

    def _live_step(self, b: FrameBatch, records: list[CropRecord]) -> None:
        if b.kind != "frames" or not records:
            return
        win_key = self.keys.window(b.source)
        state_key = self.keys.live_state(b.source)
        now = max(b.wall) if b.wall else time.time()
        pipe = self.r.pipeline(transaction=True)
        # Members are unique per (seq, crop): a redelivered batch rewrites the same members. A low-quality
        # crop's index carries a "q" (the one field workers before issue 17 do not parse).
        pipe.zadd(win_key, {f"{b.seq}:{i}{'q' if r.low_quality else ''}:{r.prob:.6f}:{int(r.anomalous)}:{r.anomaly:.5g}":
                            b.wall[i] for i, r in enumerate(records)})  # fmt: skip
        pipe.zremrangebyscore(win_key, "-inf", now - self.cfg.window_s)
        pipe.zrange(win_key, 0, -1)
        pipe.expire(win_key, int(self.cfg.window_s * 10) + 60)
        pipe.hgetall(state_key)
        _, _, members, _, state_raw = pipe.execute()
        probs, flags, scores, lq = [], [], [], 0
        for m in members:
            _seq, i, p, a, *score = m.decode().split(":")  # members written before issue 8 lack the score
            probs.append(float(p))
            flags.append(a == "1")
            scores.extend(float(v) for v in score)
            lq += i.endswith("q")
        lq_rate = lq / len(members) if members else 0.0
        state = {k.decode(): v.decode() for k, v in state_raw.items()}
        d = window_decision(probs, flags, state, threshold=self.model.video_threshold, margin=self.cfg.hysteresis,
                            min_faces=self.cfg.min_window_faces, anomaly_rate=self.cfg.anomaly_rate,
                            scores=scores, track_threshold=self.model.track_threshold)  # fmt: skip
        best = max(range(len(records)), key=lambda i: records[i].prob)
        worst = records[best]
        if d.deepfake == "on":
            self._keep_evidence(b, records, {best})
            alert = make_alert("deepfake", b.source, f"{b.source}:deepfake:{b.seq}", model=self.model.info,
                               window_s=self.cfg.window_s, score=d.mean_prob, threshold=self.model.video_threshold,
                               faces=d.faces, anomaly_rate=d.anomaly_rate, low_quality_rate=lq_rate,
                               evidence=evidence(worst, self.model))  # fmt: skip
            if self.alerts.emit(alert):
                self._count_alert("deepfake")
        if d.anomaly == "on":
            most = max(range(len(records)), key=lambda i: records[i].anomaly)
            self._keep_evidence(b, records, {most})
            w = records[most]
            alert = make_alert("anomaly", b.source, f"{b.source}:anomaly:{b.seq}", model=self.model.info,
                               window_s=self.cfg.window_s, anomaly_rate=d.anomaly_rate, low_quality_rate=lq_rate,
                               rate_threshold=self.cfg.anomaly_rate, faces=d.faces, evidence=evidence(w, self.model))  # fmt: skip
            if self.alerts.emit(alert):
                self._count_alert("anomaly")
        changes = {k: v for k, v in (("deepfake", d.deepfake), ("anomaly", d.anomaly)) if v}
        if changes:
            self.r.hset(state_key, mapping=changes)

    def _count_alert(self, kind: str) -> None:
        self.stats["alerts"] += 1
        if self.metrics:
            self.metrics.alert(kind)


def picks(records: list[CropRecord]) -> set[int]:
    """Indexes of the most fake-looking and the most anomalous record."""
    if not records:
        return set()
    return {max(range(len(records)), key=lambda i: records[i].prob),
            max(range(len(records)), key=lambda i: records[i].anomaly)}  # fmt: skip


def evidence(r: CropRecord, model: LoadedModel) -> dict[str, Any]:
    return {
        "frame": r.frame, "pts": r.pts, "box": r.box, "track": r.track, "fake_prob": r.prob,
        "mahalanobis": r.anomaly, "mahalanobis_threshold": model.anomaly_threshold,
        "anomalous": r.anomalous, "low_quality": list(r.low_quality),
    }  # fmt: skip
