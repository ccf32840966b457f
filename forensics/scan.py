"""``forensics scan``: the ingest + detect path for one file, in one process, without Redis.

Same decoding (forensics.video), face crops (forensics.faces), model and scorer
(forensics.model) and aggregation rule (forensics.verdicts) as the daemon.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from forensics.config import Settings
from forensics.disclosure import disclose
from forensics.faces import build_cropper
from forensics.model import LoadedModel
from forensics.verdicts import CropRecord, file_verdict
from forensics.video import FrameSampler, decode_file


def scan_file(path: str | Path, settings: Settings, model: LoadedModel, *, full_scores: bool = False) -> dict:
    """Verdict fields for one file (as in a ``verdict`` alert), with scores at ``alerts.scores``
    (``full_scores``: as computed, for the operator who holds the model). Raises BadVideo if unreadable."""
    path = Path(path)
    ing = settings.ingest
    cropper = build_cropper(settings.faces, model.size)
    stats: dict = {}
    records: list[CropRecord] = []
    pending: list = []

    def flush() -> None:
        if not pending:
            return
        scores = model.score(np.stack([c.image for _, c in pending]))
        for i, (df, crop) in enumerate(pending):
            records.append(CropRecord(df.index, df.pts, crop.track, float(scores.fake_prob[i]),
                                      float(scores.anomaly[i]), bool(scores.anomalous[i]), crop.box))  # fmt: skip
        pending.clear()

    sampler = FrameSampler(ing.sample, every_nth=ing.every_nth, fps=ing.fps)
    for df in decode_file(path, ing.limits, sampler, threads=ing.decode_threads, info_out=stats):
        pending.extend((df, crop) for crop in cropper.crops(df))
        if len(pending) >= settings.detect.max_batch:
            flush()
    flush()
    eof = {"file": path.name, "frames_decoded": stats.get("decoded", 0), "frames_sampled": stats.get("sampled", 0)}
    verdict = file_verdict(records, threshold=model.video_threshold, eof=eof, track_anomaly_threshold=model.track_threshold)
    verdict["model"] = model.info
    pol = settings.alerts
    return disclose(verdict, "full" if full_scores else pol.scores, pol.score_decimals)
