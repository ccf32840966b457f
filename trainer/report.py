"""The evaluation report: PNG figures, a self-contained report.html and metrics.json.

``write_report(result, history, out_dir)`` takes the dict of :func:`trainer.evaluate.evaluate`
and the per-epoch ``history`` of the version's ``report/metrics.json``. Every figure gets one
plain-language sentence with its numbers; failed sanity checks are listed at the top.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from trainer.metrics import jsonable

FIGURES = ("robustness", "roc", "mahalanobis", "epochs", "samples", "saliency", "generator_ssim", "generator_samples")


def _fmt(v: Any, pct: bool = True) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def _img(arr: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(arr).transpose(1, 2, 0), 0, 1)


def _figures(result: dict[str, Any], history: list[dict], out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["attacks"]
    figs = result.get("_figures", {})
    captions: dict[str, str] = {}

    def save(fig, name: str, caption: str) -> None:
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=90)
        plt.close(fig)
        captions[name] = caption

    # 1. robustness curve
    fig, ax = plt.subplots(figsize=(6, 4))
    parts = []
    for fam, style in (("fgsm", "o--"), ("pgd", "o-"), ("adaptive", "s-")):
        curve = sorted((r["eps"], r["success_rate"]) for r in rows.values() if r["family"] == fam)
        if curve:
            ax.plot([e * 255 for e, _ in curve], [s for _, s in curve], style, label=fam)
            parts.append(f"{fam.upper()} " + ", ".join(f"{round(e * 255)}/255: {_fmt(s)}" for e, s in curve))
    bb = result.get("blackbox", {})
    if bb.get("images"):
        ax.plot([bb["eps"] * 255], [bb["success_rate"]], "k^", label=f"black-box ({bb['images']} images)")
    ax.set_xlabel("L-inf eps (x/255)")
    ax.set_ylabel("attack success (fakes called real)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, "robustness", f"Share of {result['attacked_fakes']} correctly detected test fakes that each attack makes "
         f"the model call real, against the perturbation budget: {'; '.join(parts)}; black-box at 8/255: "
         f"{_fmt(bb.get('success_rate'))} (median L-inf {_fmt(bb.get('median_linf'), False)} after "
         f"{_fmt(bb.get('median_queries'), False).split('.')[0]} queries).")  # fmt: skip

    # 2. ROC
    fig, ax = plt.subplots(figsize=(4.5, 4))
    roc = figs.get("roc")
    if roc is not None:
        ax.plot(roc["fpr"], roc["tpr"], label="frames")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend()
    c = result["clean"]
    save(fig, "roc", f"ROC curve of the fake probability on {c['frames']} clean test crops: frame AUC "
         f"{_fmt(c['frame_auc'], False)}, video AUC {_fmt(c['video_auc'], False)}, accuracy at the calibrated "
         f"threshold {_fmt(c['frame_accuracy'])} (frames) and {_fmt(c['video_accuracy'])} (videos).")  # fmt: skip

    # 3. Mahalanobis distributions
    fig, ax = plt.subplots(figsize=(6.5, 4))
    clean_s = np.asarray(figs.get("clean_scores", []))
    groups = {"clean test": clean_s, **{f"adv {k}": v for k, v in figs.get("adv_scores", {}).items()},
              **{f"OOD {k}": v for k, v in figs.get("ood_scores", {}).items()}}  # fmt: skip
    allv = np.concatenate([np.asarray(v) for v in groups.values() if len(v)]) if groups else np.zeros(1)
    lo, hi = (
        np.percentile(allv, [0.5, 97]) if allv.size else (0, 1)
    )  # heavy OOD tail: clipped into the last bin
    bins = np.linspace(lo, hi, 40)
    for name, v in groups.items():
        if len(v):
            ax.hist(np.clip(v, lo, hi), bins=bins, histtype="step", density=True, label=name)
    thr = c["anomaly_threshold"]
    ax.axvline(thr, color="red", ls="--", label="anomaly threshold")
    ax.set_xlabel("combined Mahalanobis score")
    ax.legend(fontsize=7)
    det = ", ".join(f"{k} {_fmt(rows[k]['detection_rate'])}" for k in figs.get("adv_scores", {}) if k in rows)
    ood = ", ".join(f"{k} {_fmt(v['detection_rate'])}" for k, v in result.get("ood", {}).items())
    save(fig, "mahalanobis", f"Distribution of the anomaly score for clean, adversarial and out-of-distribution crops; "
         f"scores above {hi:.3g} are drawn in the last bin; the dashed line is the threshold {thr:.3g}, which flags {_fmt(c['clean_anomaly_rate'])} of clean test crops, "
         f"and flags adversarial {det}; OOD {ood}.")  # fmt: skip

    # 4. per-epoch curves from training history
    fig, ax = plt.subplots(figsize=(6, 4))
    ep = [h for h in history if "pgd_success" in h]
    if ep:
        ax.plot([h["epoch"] for h in ep], [h["pgd_success"] for h in ep], "o-", label="PGD success (val)")
        ax.plot([h["epoch"] for h in ep], [h.get("anomaly_detection_rate", float("nan")) for h in ep], "s-",
                label="anomaly detection rate (val)")  # fmt: skip
        first_adv = next((h["epoch"] for h in ep if h.get("phase") == "adv"), None)
        if first_adv:
            ax.axvline(first_adv - 0.5, color="grey", ls=":", label="adversarial phase starts")
    ax.set_xlabel("epoch")
    ax.set_ylim(-0.02, 1.02)
    ax.legend()
    ax.grid(alpha=0.3)
    if ep:
        text = (
            f"PGD success on validation fakes fell from {_fmt(ep[0]['pgd_success'])} after epoch {ep[0]['epoch']} "
            f"to {_fmt(ep[-1]['pgd_success'])} after epoch {ep[-1]['epoch']}, while the anomaly detector flagged "
            f"{_fmt(ep[0].get('anomaly_detection_rate'))} then {_fmt(ep[-1].get('anomaly_detection_rate'))} of them."
        )
    else:
        text = "No per-epoch history was recorded for this version."
    save(
        fig,
        "epochs",
        "Attack success and anomaly detection rate per training epoch (from the trainer's history): " + text,
    )

    # 5. sample grid
    s = figs.get("samples")
    k = len(s["clean"]) if s else 0
    fig, axes = plt.subplots(2, max(1, k), figsize=(1.8 * max(1, k), 4.2), squeeze=False)
    for i in range(k):
        for r, (img, p, sc) in enumerate(((s["clean"][i], s["clean_prob"][i], s["clean_score"][i]),
                                          (s["adv"][i], s["adv_prob"][i], s["adv_score"][i]))):  # fmt: skip
            axes[r, i].imshow(_img(img))
            axes[r, i].set_title(f"p={p:.2f} m={sc:.2f}", fontsize=7)
    for a in axes.flat:
        a.axis("off")
    if k:
        flips = int(np.sum(s["adv_prob"] <= c["frame_threshold"]))
        text = (
            f"Top row: {k} clean test fakes; bottom row: the same crops after {s['attack']}, with fake probability p "
            f"and anomaly score m; {flips} of {k} are called real after the attack (threshold p={c['frame_threshold']:.2f})."
        )
    else:
        text = "No correctly detected fakes to show."
    save(fig, "samples", text)

    # 6. saliency
    sal = figs.get("saliency")
    k = len(sal["images"]) if sal else 0
    has_cam = bool(sal and "cam" in sal)
    fig, axes = plt.subplots(3 if has_cam else 2, max(1, k), figsize=(1.8 * max(1, k), 6.0 if has_cam else 4.0),
                             squeeze=False)  # fmt: skip
    for i in range(k):
        axes[0, i].imshow(_img(sal["images"][i]))
        axes[1, i].imshow(sal["grad"][i], cmap="inferno")
        if has_cam:
            axes[2, i].imshow(_img(sal["images"][i]))
            axes[2, i].imshow(sal["cam"][i], cmap="jet", alpha=0.45)
    for a in axes.flat:
        a.axis("off")
    if k:
        g = np.asarray(sal["grad"]).reshape(k, -1)
        top = np.sort(g, axis=1)[:, -max(1, g.shape[1] // 10) :].sum(axis=1) / np.maximum(
            g.sum(axis=1), 1e-30
        )
        text = (
            f"Input-gradient magnitude of the logit for {k} fakes (brighter = pixels the decision is most sensitive to); "
            f"the top 10% of pixels carry {_fmt(float(top.mean()))} of the gradient on average."
        )
        if has_cam:
            reg = {r: float(np.mean([x[r] for x in sal["regions"]])) for r in sal["regions"][0]}
            text += (
                f" Bottom row: Grad-CAM (which regions raised the fake score), on average "
                f"{_fmt(reg['upper_face'])} on the upper face (eyes, brows), {_fmt(reg['lower_face'])} on the lower "
                f"face (nose, mouth) and {_fmt(reg['background'])} outside the face box. "
                f"`forensics explain ALERT_ID` draws the same maps for an alert's evidence crop."
            )
    else:
        text = "No fakes to show saliency for."
    save(fig, "saliency", text)

    # 7-8. generator fidelity (SSIM against the nearest real crop), clean and adversarial latents
    _generator_figures(result, figs.get("generator_ssim"), plt, save)
    return captions


def _generator_figures(result: dict[str, Any], gs: dict[str, Any] | None, plt, save) -> None:
    info = result.get("ssim_generator")
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), sharex=True, sharey=True)
    if gs and isinstance(info, dict):
        lo = min(float(v.min()) for v in gs["ssim"].values())
        hi = max(float(v.max()) for v in gs["ssim"].values())
        bins = np.linspace(lo - 0.01, hi + 0.01, 40)
        for ax, name in zip(axes, ("clean", "adversarial")):
            ax.hist(gs["ssim"][name], bins=bins, color="tab:blue" if name == "clean" else "tab:red")
            ax.axvline(info[name]["ssim_median"], color="k", ls="--", lw=1)
            ax.set_title(f"{name} latents (n={len(gs['ssim'][name])})", fontsize=9)
            ax.set_xlabel("SSIM to nearest real crop")
        axes[0].set_ylabel("generator samples")
        c, a = info["clean"], info["adversarial"]
        text = (
            f"Fidelity of {info['samples']} generator samples: SSIM of each against its nearest real test crop "
            f"(of {info['real_crops']}). Left, latents drawn at random: median {c['ssim_median']:.3f} "
            f"(10th-90th percentile {c['ssim_p10']:.3f}-{c['ssim_p90']:.3f}), {_fmt(c['called_real'])} called real by "
            f"the discriminator. Right, the same latents moved by PGD (L-inf {info['eps_z']} in latent space) to make "
            f"the discriminator call the samples real: median {a['ssim_median']:.3f} "
            f"({a['ssim_p10']:.3f}-{a['ssim_p90']:.3f}), {_fmt(a['called_real'])} called real. Dashed: medians."
        )
    else:
        text = f"Generator fidelity not computed: {info or 'no generator weights'}."
    for ax in axes:
        ax.grid(alpha=0.3)
    save(fig, "generator_ssim", text)

    ex = gs.get("examples") if gs else None
    fig, axes = plt.subplots(4, 6, figsize=(9, 6.4), squeeze=False)
    for r, (name, row) in enumerate((("clean", 0), ("clean", 1), ("adversarial", 0), ("adversarial", 1))):
        for i in range(6):
            if ex is not None and i < ex[name].shape[1]:
                axes[r, i].imshow(_img(ex[name][row, i]))
            axes[r, i].axis("off")
        axes[r, 0].set_title(f"{name}: {'sample' if row == 0 else 'nearest real'}", fontsize=8, loc="left")
    text = (
        "Rows 1-2: generator samples from random latents and their nearest real crops; rows 3-4: the same for "
        "adversarial latents." if ex is not None else "No generator samples."
    )
    save(fig, "generator_samples", text)


def write_report(result: dict[str, Any], history: list[dict], out_dir) -> Path:
    """Write the PNG figures, report.html (figures embedded) and metrics.json; returns report.html's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    captions = _figures(result, history, out)
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    (out / "metrics.json").write_text(json.dumps(jsonable(public), indent=1))

    failed = [c for c in result.get("sanity", []) if not c["passed"]]
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Robustness report</title>",
             ("<style>body{font-family:sans-serif;max-width:900px;margin:auto}.fail{background:#fdd;border:2px solid #c00;"
              "padding:8px}.ok{background:#dfd;padding:8px}td,th{border:1px solid #ccc;padding:2px 6px}"
              "table{border-collapse:collapse}</style></head><body>"),
             f"<h1>Robustness report: {e(str(result.get('version', '?')))}</h1>"]  # fmt: skip
    if failed:
        parts.append("<div class='fail'><h2>FAILED sanity checks</h2><ul>")
        parts += [
            f"<li><b>{e(c['name'])}</b>: {e(json.dumps(jsonable(c['numbers'])))} {e(c.get('note', ''))}</li>"
            for c in failed
        ]
        parts.append(
            "</ul><p>Robustness numbers below are not trustworthy until these are explained.</p></div>"
        )
    else:
        parts.append(f"<div class='ok'>All {len(result.get('sanity', []))} sanity checks passed.</div>")
    parts.append("<h2>Sanity checks</h2><table><tr><th>check</th><th>passed</th><th>numbers</th></tr>")
    parts += [f"<tr><td>{e(c['name'])}</td><td>{'yes' if c['passed'] else '<b>NO</b>'}</td>"
              f"<td>{e(json.dumps(jsonable(c['numbers'])))}</td></tr>" for c in result.get("sanity", [])]  # fmt: skip
    parts.append(
        "</table><h2>Attacks</h2><table><tr><th>attack</th><th>success</th><th>median L2</th>"
        "<th>median L-inf</th><th>anomaly detection</th><th>AUROC</th><th>fooled and undetected</th></tr>"
    )
    for name, r in result["attacks"].items():
        parts.append(f"<tr><td>{e(name)}</td><td>{_fmt(r['success_rate'])}</td><td>{_fmt(r['median_l2'], False)}</td>"
                     f"<td>{_fmt(r['median_linf'], False)}</td><td>{_fmt(r['detection_rate'])}</td>"
                     f"<td>{_fmt(r['auroc'], False)}</td><td>{_fmt(r.get('fooled_and_undetected'))}</td></tr>")  # fmt: skip
    parts.append("</table>")
    for name in FIGURES:
        png = out / f"{name}.png"
        b64 = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"<h2>{name}</h2><img alt='{name}' src='data:image/png;base64,{b64}' style='max-width:100%'>"
                     f"<p>{e(captions[name])}</p>")  # fmt: skip
    ps = result.get("perturbation_ssim") or {}
    if ps:
        parts.append("<p>How visible the attacks are (SSIM of adversarial crops to their originals, 1 = identical): "
                     + "; ".join(f"{e(k)} mean {v['ssim_mean']:.3f}, min {v['ssim_min']:.3f}" for k, v in ps.items())
                     + ".</p>")  # fmt: skip
    parts += _defence_section(result.get("defence"))
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path


def _defence_section(d: dict[str, Any] | None) -> list[str]:
    """HTML of the second line of defence (issue 8): the methods table and the adaptive attacks."""
    if not d:
        return []
    e = html.escape
    head = (f"<h2>Second line of defence (PGD-10 at {d['eps'] * 255:.0f}/255, {d['fooling_examples']} fooling crops, "
            f"{d['fooled_tracks']} fooled tracks)</h2><table><tr><th>method</th><th>AUROC</th><th>detected @ val 5% FPR</th>"
            "<th>clean FPR</th><th>track AUROC</th><th>track detected</th><th>track clean FPR</th><th>OOD</th>"
            "<th>extra passes</th><th>extra ms/face</th></tr>")  # fmt: skip
    parts = [head]
    for name, m in d["methods"].items():
        label = f"<b>{e(name)} (shipped)</b>" if m["shipped"] else e(name)
        parts.append(f"<tr><td>{label}</td><td>{_fmt(m['auroc'], False)}</td><td>{_fmt(m['detection_rate'])}</td>"
                     f"<td>{_fmt(m['clean_fpr'])}</td><td>{_fmt(m['track_auroc'], False)}</td>"
                     f"<td>{_fmt(m['track_detection_rate'])}</td><td>{_fmt(m['track_clean_fpr'])}</td>"
                     f"<td>{_fmt(m['ood_all'])}</td><td>{m['extra_passes']}</td><td>{_fmt(m['extra_ms_per_face'], False)}</td></tr>")  # fmt: skip
    parts.append("</table>")
    rows = [(k, d[k]) for k in ("adaptive_frame", "adaptive_track") if k in d]
    if rows:
        parts.append("<p>Adaptive attack on the shipped detector (knows it; BPDA through the squeezers; the track "
                     "attack perturbs whole clips against the track-mean rule): "
                     + "; ".join(f"{e(k)}: {r['attacked']} attacked, fooled {_fmt(r['fooled'])}, detected {_fmt(r['detected'])}, "
                                 f"<b>combined success {_fmt(r['combined_success'])}</b>" for k, r in rows) + ".</p>")  # fmt: skip
    return parts

