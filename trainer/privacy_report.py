"""The privacy study's outputs: ``privacy.json``, the inversion figure and the HTML report
(:func:`write_report`), and the CLI's headline numbers (:func:`summary`). The measurements are
in :mod:`trainer.privacy`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def write_report(result: dict[str, Any], figure: dict[str, np.ndarray], out: Path) -> None:
    """privacy.json, inversion.png and report.html in ``out``; sets result["figure"] and result["report"]."""
    out.mkdir(parents=True, exist_ok=True)
    _figure(figure, out / "inversion.png")
    result["figure"] = "inversion.png"
    result["report"] = str(out / "report.html")
    (out / "privacy.json").write_text(json.dumps(result, indent=1))
    (out / "report.html").write_text(privacy_html(result))


def _figure(recons: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [k for k in recons if not k.startswith("_")]
    n = max(len(v) for v in recons.values())
    fig, axes = plt.subplots(len(rows) + 2, n, figsize=(1.3 * n, 1.4 * (len(rows) + 2)), squeeze=False)
    for r, key in enumerate([*rows, "_train", "_test"]):
        for c in range(n):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(recons[key]):
                img = recons[key][c]
                ax.imshow(img if img.dtype == np.uint8 else np.transpose(img, (1, 2, 0)).clip(0, 1))
        axes[r][0].set_title({"_train": "training REAL crops", "_test": "test REAL crops"}.get(key, key),
                             fontsize=7, loc="left")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- report section ------------------------------------------------------------------------


def _f(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def privacy_html(result: dict[str, Any]) -> str:
    """The privacy section of a version's report (standalone HTML page)."""
    from html import escape

    m, cost, inv = result["membership"], result["verdict_cost"], result["inversion"]
    rows = []
    for policy, row in m.items():
        c = cost.get(policy, {})
        rows.append(
            f"<tr><td>{escape(policy)}</td><td>{_f(row['crop']['auc'])}</td><td>{_f(row['crop']['tpr_at_1fpr'])}</td>"
            f"<td>{_f(row['crop']['null_auc_99'])}</td><td>{_f(row['video']['auc'])}</td>"
            f"<td>{_f(row['video']['tpr_at_1fpr'])}</td><td>{_f(row['video']['null_auc_99'])}</td>"
            f"<td>{_f(c.get('frame_auc'))}</td><td>{_f(c.get('video_auc'))}</td></tr>"
        )
    cal = m["full"]
    inv_rows = "".join(
        f"<tr><td>{escape(k)}</td><td>{_f(v['ssim_train'])}</td><td>{_f(v['ssim_test'])}</td>"
        f"<td>{_f(v['train_minus_test'])}</td><td>{_f(v['closer_to_train_share'])}</td><td>{_f(v.get('mean_fake_prob'))}</td></tr>"
        for k, v in inv.items()
        if isinstance(v, dict)
    )
    fig = f'<img src="{escape(result["figure"])}" alt="reconstructions">' if result.get("figure") else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Privacy: {escape(result["version"])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}td,th{{padding:2px 8px;text-align:right}}</style></head>
<body><h2>Privacy: what the served scores leak ({escape(result["version"])})</h2>
<p>Members: {result["splits"]["train"]["videos"]} train videos ({result["splits"]["train"]["crops"]} crops);
non-members: {result["splits"]["test"]["videos"]} test videos ({result["splits"]["test"]["crops"]} crops).
Loss-threshold attack on what <code>alerts.scores</code> publishes. <i>null 99%</i>: the AUC random
membership labels reach 1% of the time on these scores; AUCs below it are chance.</p>
<table><tr><th>published</th><th>crop AUC</th><th>TPR@1%FPR</th><th>null 99%</th><th>video AUC</th>
<th>TPR@1%FPR</th><th>null 99%</th><th>verdict frame AUC</th><th>verdict video AUC</th></tr>{"".join(rows)}</table>
<p>Calibrated attack ({escape(result["reference_model"])}), full precision: crop AUC
{_f(cal["crop_calibrated"]["auc"])} (TPR@1%FPR {_f(cal["crop_calibrated"]["tpr_at_1fpr"])}, null
{_f(cal["crop_calibrated"]["null_auc_99"])}); video AUC {_f(cal["video_calibrated"]["auc"])}.</p>
<h3>Model inversion toward REAL</h3>
<p>SSIM of each reconstruction to its nearest training vs test REAL crop (pools of
{inv["whitebox_noise"]["pool_videos"]} REAL videos from each split). <i>start_mean_face</i> is the
black-box starting point: a gap no larger than its gap means nothing was recovered. Black-box budget {inv["budget_queries"]} queries each.</p>
<table><tr><th>method</th><th>SSIM train</th><th>SSIM test</th><th>train - test</th><th>closer to train</th>
<th>P(fake)</th></tr>{inv_rows}</table>{fig}{_dp_html(result.get("dp"))}</body></html>"""


def _dp_html(dp: dict[str, Any] | None) -> str:
    if not dp:
        return ""
    rows = "".join(
        f"<tr><td>{k}</td><td colspan=5>{v['error']}</td></tr>"
        if "error" in v
        else f"<tr><td>{k}</td><td>{_f(v['epsilon_spent'])}</td><td>{_f(v['clean_frame_auc'])}</td>"
        f"<td>{_f(v['membership_auc'])}</td><td>{_f(v['membership_tpr_at_1fpr'])}</td><td>{_f(v['train_accuracy'])}</td></tr>"
        for k, v in dp["rows"].items()
    )
    return (f"<h3>DP-SGD (Opacus), discriminator without spectral norm, {dp['epochs']} epochs, "
            f"delta {dp['delta']:.2g}</h3><table><tr><th>training</th><th>epsilon</th><th>clean frame AUC</th>"
            f"<th>membership AUC</th><th>TPR@1%FPR</th><th>train accuracy</th></tr>{rows}</table>")  # fmt: skip


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers for the CLI."""
    m, inv = result["membership"], result["inversion"]
    return {
        "version": result["version"],
        "adversarial_epochs": result.get("adversarial_epochs"),
        "membership_auc": {p: {"crop": r["crop"]["auc"], "video": r["video"]["auc"]} for p, r in m.items()},
        "membership_tpr_at_1fpr": {
            p: {"crop": r["crop"]["tpr_at_1fpr"], "video": r["video"]["tpr_at_1fpr"]} for p, r in m.items()
        },
        "null_auc_99": {"crop": m["full"]["crop"]["null_auc_99"], "video": m["full"]["video"]["null_auc_99"]},
        "calibrated_auc": {
            "crop": m["full"]["crop_calibrated"]["auc"],
            "video": m["full"]["video_calibrated"]["auc"],
        },
        "verdict_video_auc": {p: r["video_auc"] for p, r in result["verdict_cost"].items()},
        "inversion_ssim_train_minus_test": {
            k: v["train_minus_test"] for k, v in inv.items() if isinstance(v, dict)
        },
        "dp": result.get("dp", {}).get("rows"),
        "report": result.get("report"),
    }
