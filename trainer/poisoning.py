"""Poisoning screen: new training samples are checked against the current model before a retraining.

A *sample* is one labelled unit of new data: a clip from an intake folder (its face crops) or an
analyst-labelled alert (its evidence crops). Each is scored with the current model (ONNX Runtime
and its Mahalanobis scorer) and quarantined when

- **no face**: the face detector the model's crops were made with finds a face in fewer than
  ``min_face_share`` of its crops (a texture patch labelled as a face: out of distribution
  whatever the model's features say; model-independent, so a weak current model cannot miss it);
- **outlier**: the median of its crops' Mahalanobis scores is above the ``outlier_quantile`` of the
  current model's clean validation crops (far from both clean class-conditional distributions:
  out-of-distribution or crafted input);
- **suspicious label flip**: the current model's call at its calibrated video threshold disagrees
  with the given label *and* the median crop sits closer to the other class mean than to its
  label's: the per-layer margin ``d2(own class) - d2(other class)``, standardized per layer and
  averaged, is above the ``flip_quantile`` of the same margin on correctly labelled validation
  crops (and above 0);
- **untrusted source**: a source whose labels disagree with the current model far more often
  than the model errs on its own validation data (one-sided binomial test at ``source_alpha``
  against the validation disagreement rate) has all its samples quarantined. A weak current
  model cannot single out one flipped label with confidence, but a batch of flips from one
  folder or one camera stands out as a batch.

All thresholds come from the current model's own validation split (the data its thresholds were
calibrated on), never from the new data. Samples that pass are then capped so one run cannot
shift the training data too far: at most ``max_new_share`` of the base training crops in total and
``max_source_share`` from any one source; samples over a cap are deferred (not quarantined).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from forensics.faces import face_presence
from forensics.model import LoadedModel

FaceCheck = Callable[[np.ndarray], np.ndarray]  # uint8 [N,S,S,3] RGB crops -> bool [N]: a face is found


@dataclass
class Sample:
    id: str  # "dir:<part>/<file>" or "alert:<alert id>"
    source: str  # what a per-source cap counts against: the folder, or "alert:<source>"
    label: int  # 0 REAL, 1 FAKE, as given by the intake
    images: np.ndarray  # uint8 [K, S, S, 3] RGB crops


@dataclass
class Calibration:
    """Screen thresholds, from the current model's clean validation crops."""

    outlier_threshold: float  # combined Mahalanobis score units
    flip_threshold: float  # standardized margin: (distance to own class) - (distance to other class)
    video_threshold: float  # the current model's calibrated per-video fake probability
    layer_margin_std: list[float]  # per-layer spread of the margin on validation crops
    disagree_rate_video: float  # validation videos the model calls against their label (Laplace-smoothed)
    disagree_rate_crop: float  # the same for single crops
    val_crops: int

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class ScreenResult:
    accepted: list[Sample] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)  # one row per sample: why, numbers
    capped: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "samples_in": len(self.accepted) + len(self.quarantined) + len(self.capped),
            "accepted": len(self.accepted),
            "accepted_crops": sum(len(s.images) for s in self.accepted),
            "quarantined": len(self.quarantined),
            "quarantined_no_face": sum(q["reason"] == "no face" for q in self.quarantined),
            "quarantined_outlier": sum(q["reason"] == "outlier" for q in self.quarantined),
            "quarantined_flip": sum(q["reason"] == "suspicious label flip" for q in self.quarantined),
            "quarantined_source": sum(q["reason"] == "untrusted source" for q in self.quarantined),
            "capped": len(self.capped),
        }


def class_scores(model: LoadedModel, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fake probability float64 [N], anomaly score float64 [N], per-layer class distances float64 [N, L, 2])."""
    out = model.net.run(images)
    d = model.scorer.class_distances(out.features)
    return out.fake_prob, model.scorer.combine(d.min(axis=2)), d


def _layer_margins(d: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float64 [N, L]: distance to the given label's class minus to the other (> 0: closer to the other)."""
    idx = np.arange(len(labels))
    return d[idx, :, labels] - d[idx, :, 1 - labels]


def _disagrees(prob: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    return (prob > threshold) != (labels == 1)


def calibrate(model: LoadedModel, val_images: np.ndarray, val_labels: np.ndarray, val_video: np.ndarray, *,
              outlier_quantile: float, flip_quantile: float) -> Calibration:  # fmt: skip
    """Thresholds from the current model's clean validation crops.

    val_images uint8 [N,S,S,3], val_labels int [N] (0 REAL, 1 FAKE), val_video int [N] (clip of each crop).
    """
    prob, anomaly, d = class_scores(model, val_images)
    labels = np.asarray(val_labels, np.int64)
    margins = _layer_margins(d, labels)
    std = np.maximum(margins.std(axis=0), 1e-12)
    thr = float(model.video_threshold)
    videos = np.unique(val_video)
    video_wrong = [_disagrees(np.array([prob[val_video == v].mean()]), labels[val_video == v][:1], thr)[0]
                   for v in videos]  # fmt: skip
    crop_wrong = _disagrees(prob, labels, thr)
    return Calibration(
        outlier_threshold=float(np.quantile(anomaly, outlier_quantile, method="higher")),
        flip_threshold=max(0.0, float(np.quantile((margins / std).mean(axis=1), flip_quantile, method="higher"))),
        video_threshold=thr,
        layer_margin_std=[float(x) for x in std],
        # Laplace smoothing: a small validation split with no error must not make every disagreement damning.
        disagree_rate_video=float(sum(video_wrong) + 1) / (len(videos) + 2),
        disagree_rate_crop=(int(crop_wrong.sum()) + 1) / (len(labels) + 2),
        val_crops=len(labels),
    )


def _verdict(model: LoadedModel, cal: Calibration, sample: Sample, face_share: float | None = None,
             min_face_share: float = 0.5) -> dict[str, Any]:  # fmt: skip
    prob, anomaly, d = class_scores(model, sample.images)
    labels = np.full(len(prob), sample.label, np.int64)
    margin = (_layer_margins(d, labels) / np.asarray(cal.layer_margin_std)).mean(axis=1)
    row = {
        "id": sample.id, "source": sample.source, "label": "FAKE" if sample.label else "REAL",
        "crops": len(prob),
        "median_anomaly": float(np.median(anomaly)), "outlier_threshold": cal.outlier_threshold,
        "mean_fake_prob": float(prob.mean()), "video_threshold": cal.video_threshold,
        "median_margin_to_other_class": float(np.median(margin)), "flip_threshold": cal.flip_threshold,
    }  # fmt: skip
    row["disagrees"] = bool(_disagrees(np.array([row["mean_fake_prob"]]), labels[:1], cal.video_threshold)[0])
    if face_share is not None:
        row["face_share"] = face_share
    if face_share is not None and face_share < min_face_share:
        row["reason"] = "no face"
    elif row["median_anomaly"] > cal.outlier_threshold:
        row["reason"] = "outlier"
    elif row["disagrees"] and row["median_margin_to_other_class"] > cal.flip_threshold:
        row["reason"] = "suspicious label flip"
    else:
        row["reason"] = None
    return row


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return float(sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def _untrusted_sources(rows: list[dict[str, Any]], cal: Calibration, alpha: float) -> dict[str, dict[str, Any]]:
    """Sources whose disagreement count is implausible under the model's validation disagreement rate."""
    by_source: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    out = {}
    for source, rs in by_source.items():
        k = sum(r["disagrees"] for r in rs)
        rate = float(np.mean([cal.disagree_rate_crop if r["crops"] == 1 else cal.disagree_rate_video for r in rs]))
        p = binomial_tail(k, len(rs), rate)
        if p < alpha:
            out[source] = {"source_disagreements": k, "source_samples": len(rs), "expected_rate": rate, "p_value": p}
    return out


def screen(model: LoadedModel, cal: Calibration, samples: list[Sample], *, base_crops: int, max_new_share: float,
           max_source_share: float, source_alpha: float = 0.01, has_face: FaceCheck | None | str = "model",
           min_face_share: float = 0.5) -> ScreenResult:  # fmt: skip
    """Quarantine crops without faces, outliers, suspicious flips and untrusted sources, then cap what is left.

    ``base_crops``: crops in the base training split (what the shares are of). ``has_face``: the
    face check (uint8 crops -> bool per crop); ``"model"`` (default): the detector recorded in the
    model's manifest (:func:`forensics.faces.face_presence`); None: no face check.
    """
    result = ScreenResult()
    if has_face == "model":
        crop = model.artifact.manifest.get("preprocessing", {}).get("crop", {})
        has_face = face_presence(str(crop.get("detector", "haar")))
    shares = [float(has_face(s.images).mean()) if has_face is not None and len(s.images) else None for s in samples]
    rows = [_verdict(model, cal, sample, share, min_face_share) for sample, share in zip(samples, shares)]
    # Outliers say nothing about a source's labels: the binomial test counts the in-distribution samples.
    untrusted = _untrusted_sources([r for r in rows if r["reason"] not in ("outlier", "no face")], cal, source_alpha)
    passed: list[tuple[Sample, dict[str, Any]]] = []
    for sample, row in zip(samples, rows):
        if row["reason"] is None and sample.source in untrusted:
            row.update(reason="untrusted source", **untrusted[sample.source])
        (result.quarantined.append(row) if row["reason"] else passed.append((sample, row)))
    total_cap = max_new_share * base_crops
    source_cap = max_source_share * base_crops
    total, per_source = 0, {}
    # Hash order, not arrival order: an attacker cannot win the budget by sending first.
    for sample, row in sorted(passed, key=lambda p: hashlib.sha256(p[0].id.encode()).hexdigest()):
        n = len(sample.images)
        used = per_source.get(sample.source, 0)
        if total + n > total_cap or used + n > source_cap:
            which = "total" if total + n > total_cap else "per-source"
            result.capped.append({**row, "reason": f"{which} cap", "total_cap_crops": total_cap,
                                  "source_cap_crops": source_cap})  # fmt: skip
            continue
        total += n
        per_source[sample.source] = used + n
        result.accepted.append(sample)
        result.kept.append(row)
    return result
