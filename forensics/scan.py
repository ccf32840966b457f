"""``forensics scan``: the ingest + detect path for one file, in one process, without Redis.

Same decoding (forensics.video), face crops (forensics.faces), model and scorer
(forensics.model), quality gate (forensics.quality) and aggregation rule (forensics.verdicts) as
the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from forensics.config import Settings
from forensics.disclosure import disclose
from forensics.faces import build_cropper
from forensics.model import LoadedModel
from forensics.quality import face_check_on, face_checker, low_quality
from forensics.verdicts import CropRecord, file_verdict
from forensics.video import FrameSampler, decode_file


@dataclass
class ScanDetail:
    """What a case report needs beyond the verdict: every scored crop, and the ``keep`` most
    fake-looking crops with a thumbnail of their frame (uint8 RGB, at most ``thumb_width`` wide)."""

    keep: int = 6
    thumb_width: int = 320
    records: list[CropRecord] = field(default_factory=list)
    top: list[tuple[CropRecord, np.ndarray, np.ndarray]] = field(default_factory=list)  # (record, crop, frame)

    def offer(self, record: CropRecord, crop: np.ndarray, decoded) -> None:
        if len(self.top) >= self.keep and record.prob <= self.top[-1][0].prob:
            return
        w, h = decoded.frame.width, decoded.frame.height
        tw = min(self.thumb_width, w)
        th = max(2, round(h * tw / w))
        self.top.append((record, crop.copy(), decoded.rgb(tw - tw % 2, th - th % 2)))
        self.top.sort(key=lambda t: -t[0].prob)
        del self.top[self.keep :]


def scan_file(path: str | Path, settings: Settings, model: LoadedModel, detail: ScanDetail | None = None, *,
              full_scores: bool = False) -> dict:
    """Verdict fields for one file (as in a ``verdict`` alert), with scores at ``alerts.scores``
    (``full_scores``: as computed, for the operator who holds the model). Raises BadVideo if unreadable.

    With ``detail``, also fills in its per-crop records and top crops (for ``forensics report``)."""
    path = Path(path)
    ing = settings.ingest
    cropper = build_cropper(settings.faces, model.size)
    stats: dict = {}
    records: list[CropRecord] = []
    pending: list = []
    face_check = face_checker(model.crop_detector) if face_check_on(settings.quality, settings.faces.detector) else None

    def flush() -> None:
        if not pending:
            return
        images = np.stack([c.image for _, c in pending])
        scores = model.score(images)
        has_face = face_check(images) if face_check is not None else None
        lq = low_quality(images, [c.box for _, c in pending], [c.region for _, c in pending], settings.quality, has_face)
        for i, (df, crop) in enumerate(pending):
            records.append(CropRecord(df.index, df.pts, crop.track, float(scores.fake_prob[i]),
                                      float(scores.anomaly[i]), bool(scores.anomalous[i]), crop.box, lq[i]))  # fmt: skip
            if detail is not None:
                detail.offer(records[-1], crop.image, df)
        pending.clear()

    sampler = FrameSampler(ing.sample, every_nth=ing.every_nth, fps=ing.fps)
    for df in decode_file(path, ing.limits, sampler, threads=ing.decode_threads, info_out=stats):
        pending.extend((df, crop) for crop in cropper.crops(df))
        if len(pending) >= settings.detect.max_batch:
            flush()
    flush()
    if detail is not None:
        detail.records = records
    eof = {"file": path.name, "frames_decoded": stats.get("decoded", 0), "frames_sampled": stats.get("sampled", 0)}
    verdict = file_verdict(records, threshold=model.video_threshold, eof=eof, track_anomaly_threshold=model.track_threshold)
    verdict["model"] = model.info
    verdict["trained_on"] = model.trained_on
    pol = settings.alerts
    return disclose(verdict, "full" if full_scores else pol.scores, pol.score_decimals)
