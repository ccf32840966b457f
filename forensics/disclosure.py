"""How precise a published score may be: the one function every output path calls.

Fine-grained scores published to any Redis subscriber (or returned to anyone who can drop a
file) are the oracle that membership inference and model inversion need (Fredrikson et al.
2015; Shokri et al. 2017). ``alerts.scores`` chooses what leaves the daemon:

- ``full``: scores as computed (float64 probabilities, Mahalanobis scores);
- ``rounded``: probabilities and rates to ``alerts.score_decimals`` decimals, anomaly
  (Mahalanobis) scores to that many significant digits plus one;
- ``label`` (the default, from the measurements in README "Privacy"): no continuous score at all: ``score``, ``fake_prob``, ``mahalanobis`` and
  ``anomaly_mean`` become null, each crop of the results stream carries its 0/1 FAKE decision
  at the model's frame threshold instead of its probability, rates are rounded as above.

Labels, counts, boxes, frame indices, thresholds (constants of a model version) and ids are
never changed. Every published event carries ``scores`` (the policy applied) so a consumer
knows what it is reading. :func:`disclose` is the one place the policy is applied: the alert
writer (every alert kind), the detect worker's results stream, ``forensics scan`` and the web
console's API all call it. Full precision stays with whoever holds the model files (the
operator's local ``forensics scan --full-scores`` and ``forensics explain``), since they can
compute any score anyway; it is never published.
"""

from __future__ import annotations

import math
from typing import Any, Literal

Policy = Literal["full", "rounded", "label"]
POLICIES: tuple[str, ...] = ("full", "rounded", "label")

# Fields holding a probability or a rate in [0, 1] (rounded to N decimals).
_PROB_FIELDS = frozenset({"score", "fake_prob"})
_RATE_FIELDS = frozenset({"anomaly_rate", "low_quality_rate"})
# Fields holding an unbounded anomaly score (rounded to N+1 significant digits).
_ANOMALY_FIELDS = frozenset({"mahalanobis", "anomaly_mean"})
# Under "label" these become null.
_CONTINUOUS = _PROB_FIELDS | _ANOMALY_FIELDS
# Columns of a results-stream crop row (workers/detect.py).
RESULT_FIELDS = ["frame", "pts", "track", "fake_prob", "mahalanobis", "anomalous", "box"]
RESULT_FIELDS_LABEL = ["frame", "pts", "track", "fake", "mahalanobis", "anomalous", "box"]


def round_prob(x: float | None, decimals: int) -> float | None:
    """A probability or rate rounded to ``decimals`` decimals (None and non-finite kept)."""
    if x is None or not math.isfinite(x):
        return x
    return round(float(x), decimals)


def round_sig(x: float | None, digits: int) -> float | None:
    """``x`` to ``digits`` significant digits (None and non-finite kept)."""
    if x is None or not math.isfinite(x) or x == 0:
        return x
    return float(f"{float(x):.{digits}g}")


def disclose(event: dict[str, Any], policy: Policy = "full", decimals: int = 2, *,
             frame_threshold: float | None = None) -> dict[str, Any]:  # fmt: skip
    """A copy of a published event (alert, results entry, scan verdict) at ``policy``.

    Walks nested dicts (``evidence``, ``tracks``) and a results entry's ``crops`` rows (whose
    layout ``fields`` names). ``frame_threshold`` (the model's per-crop threshold) is needed to
    turn a crop's probability into its 0/1 decision under ``label``; without it the crop's
    probability becomes null. The input is not modified.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown score policy {policy!r} (full, rounded or label)")
    out = _walk(event, policy, decimals)
    if isinstance(out.get("crops"), list) and out.get("fields") == RESULT_FIELDS:
        out["crops"] = [_crop_row(row, policy, decimals, frame_threshold) for row in event["crops"]]
        if policy == "label":
            out["fields"] = list(RESULT_FIELDS_LABEL)
    out["scores"] = policy if policy != "rounded" else f"rounded:{decimals}"
    return out


def _walk(obj: Any, policy: str, decimals: int) -> Any:
    if isinstance(obj, dict):
        return {k: _field(k, v, policy, decimals) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_walk(v, policy, decimals) for v in obj]
    return obj


def _field(key: str, value: Any, policy: str, decimals: int) -> Any:
    if isinstance(value, (dict, list)):
        return _walk(value, policy, decimals)
    if policy == "full" or not isinstance(value, (int, float)) or isinstance(value, bool):
        return value
    if key in _CONTINUOUS and policy == "label":
        return None
    if key in _PROB_FIELDS or key in _RATE_FIELDS:
        return round_prob(value, decimals)
    if key in _ANOMALY_FIELDS:
        return round_sig(value, decimals + 1)
    return value


def _crop_row(row: list, policy: str, decimals: int, frame_threshold: float | None) -> list:
    frame, pts, track, prob, maha, anomalous, box = row
    if policy == "rounded":
        prob, maha = round_prob(prob, decimals), round_sig(maha, decimals + 1)
    elif policy == "label":
        prob = None if frame_threshold is None or prob is None else int(prob > frame_threshold)
        maha = None
    return [frame, pts, track, prob, maha, anomalous, box]
