"""The headline of a version's robustness report, its targets, and numbers written for people.

Both reports read these: the robustness report (``trainer/report.py``) puts the headline in its
summary box, and the case report (``forensics/casereport.py``) quotes it for the model that
scored a file. The headline is read from the report's ``metrics.json`` (the output of
``trainer.evaluate.evaluate``), which keeps full precision; only what people read is rounded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# Targets the project holds itself to (issue 4: clean video AUC; issue 17: robustness at the default
# recipe; the clean false-positive rate within 2 points of the 5% the thresholds are calibrated for).
TARGETS: dict[str, tuple[str, float]] = {
    "clean_video_auc": (">=", 0.95),
    "pgd_4_success": ("<=", 0.15),
    "adaptive_success": ("<=", 0.10),
    "clean_fpr": ("<=", 0.07),
}
LABELS = {
    "clean_video_auc": "Clean video AUC",
    "pgd_4_success": "PGD-10 success at 4/255",
    "adaptive_success": "Adaptive attack success (fooled and not flagged)",
    "clean_fpr": "Clean false-positive rate of the second line",
}


def pct(v: Any, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage with one decimal ("12.3%"); "n/a" for None or NaN."""
    if not _finite(v):
        return "n/a"
    return f"{100 * float(v):.{digits}f}%"


def sig(v: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits ("0.0157", "3.2e+04" only when huge); "n/a" if missing."""
    if not _finite(v):
        return "n/a"
    v = float(v)
    if v == 0:
        return "0"
    if 1e-4 <= abs(v) < 1e5:
        decimals = digits - 1 - math.floor(math.log10(abs(v)))
        v = round(v, decimals)
        if v != 0:  # 9.996 -> 10.0: count the digits of the rounded value
            decimals = digits - 1 - math.floor(math.log10(abs(v)))
        return f"{round(v, decimals):.{max(0, decimals)}f}"
    return f"{v:.{digits - 1}e}"


def radius(eps: Any) -> str:
    """An L-inf radius in [0, 1] pixel units as "k/255" (k with up to 2 decimals)."""
    if not _finite(eps):
        return "n/a"
    k = float(eps) * 255
    return f"{k:.0f}/255" if abs(k - round(k)) < 1e-3 else f"{sig(k, 3)}/255"  # float32 budgets


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def headline(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The four summary numbers of an evaluation result (``metrics.json``), each with its target.

    Returns {key: {label, value (float or None), target (op, value), met (bool or None), detail}}.
    The adaptive attack (the worse of per frame and per track) and the clean false-positive rate
    are those of the shipped second line
    (``defence.npz``) when the version has one, else of the pooled Mahalanobis scorer.
    """
    clean = metrics.get("clean", {})
    attacks = metrics.get("attacks", {})
    d = metrics.get("defence") or {}
    shipped = (d.get("methods") or {}).get(d.get("shipped") or "", {})
    adaptive = d.get("adaptive_frame") or {}
    values: dict[str, tuple[Any, str]] = {
        "clean_video_auc": (clean.get("video_auc"), f"{clean.get('videos', '?')} test videos, "
                            f"frame AUC {sig(clean.get('frame_auc'))}"),
        "pgd_4_success": ((attacks.get("pgd@4/255") or {}).get("success_rate"),
                          f"of {metrics.get('attacked_fakes', '?')} correctly detected test fakes"),
    }  # fmt: skip
    if adaptive:
        track = d.get("adaptive_track") or {}
        both = [v for v in (adaptive.get("combined_success"), track.get("combined_success")) if _finite(v)]
        values["adaptive_success"] = (max(both) if both else None,
                                      f"the worse of per frame {pct(adaptive.get('combined_success'))} "
                                      f"({adaptive.get('attacked')} fakes) and per track {pct(track.get('combined_success'))} "
                                      f"({track.get('attacked', 0)} clips), shipped defence"
                                      + (f", run to convergence ({adaptive['steps']} steps)" if "steps" in adaptive
                                         else ""))  # fmt: skip
    else:
        row = attacks.get("adaptive@4/255") or {}
        values["adaptive_success"] = (row.get("fooled_and_undetected"), "pooled Mahalanobis scorer (no defence.npz)")
    if shipped:
        values["clean_fpr"] = (shipped.get("clean_fpr"), "test crops, shipped defence (calibrated for 5% on validation)")
    else:
        values["clean_fpr"] = (clean.get("clean_anomaly_rate"), "test crops, pooled Mahalanobis scorer")
    out = {}
    for key, (value, detail) in values.items():
        op, target = TARGETS[key]
        met = None if not _finite(value) else (value >= target if op == ">=" else value <= target)
        out[key] = {"label": LABELS[key], "value": value if _finite(value) else None, "target": (op, target),
                    "met": met, "detail": detail}  # fmt: skip
    return out


def format_value(key: str, value: Any) -> str:
    """A headline value as people read it: AUC with 3 significant digits, rates as percentages."""
    return sig(value) if key == "clean_video_auc" else pct(value)


def format_target(key: str) -> str:
    op, target = TARGETS[key]
    return f"{'≥' if op == '>=' else '≤'}\u00a0{format_value(key, target)}"  # no break after the sign


def load_eval_metrics(version_dir: str | Path) -> dict[str, Any] | None:
    """A version's robustness report numbers (``report/eval/metrics.json``), or None if it has none."""
    path = Path(version_dir) / "report" / "eval" / "metrics.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
