"""The evaluation report: PNG figures, a self-contained report.html and metrics.json.

``write_report(result, history, out_dir)`` takes the dict of :func:`trainer.evaluate.evaluate`
and the per-epoch ``history`` of the version's ``report/metrics.json``. The page opens with a
summary box (the headline numbers beside their targets, :mod:`forensics.robustness`) and lists
failed sanity checks; every section says what its figure or table shows and what follows from it.
Numbers are rounded for reading (percentages with one decimal, distances with 2-3 significant
digits); ``metrics.json`` keeps full precision.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from forensics.robustness import TARGETS, format_target, format_value, headline, pct, radius, sig
from trainer.metrics import jsonable
from trainer.report_defence import adaptive_steps_figure, defence_section, ood_table, query_section
from trainer.sanity import detection

FIGURES = ("robustness", "adaptive_steps", "roc", "mahalanobis", "epochs", "samples", "saliency", "generator_ssim",
           "generator_samples")


def _fmt(v: Any, as_pct: bool = True) -> str:
    """A share as a percentage with one decimal, or any other number with 3 significant digits."""
    return pct(v) if as_pct else sig(v, 3)


def _img(arr: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(arr).transpose(1, 2, 0), 0, 1)


def _pooled(h: dict) -> float:
    """An epoch row's pooled-scorer detection rate (``anomaly_detection_rate`` in histories before issue 17)."""
    return h.get("pooled_detection_rate", h.get("anomaly_detection_rate", float("nan")))


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
        # The adaptive attack wins only when the fake is called real AND the detector does not flag it.
        key = (lambda r: detection(r)["fooled_and_undetected"]) if fam == "adaptive" else (lambda r: r["success_rate"])
        curve = sorted((r["eps"], key(r)) for r in rows.values() if r["family"] == fam)
        if curve:
            label = "adaptive (called real, not flagged)" if fam == "adaptive" else fam
            ax.plot([e * 255 for e, _ in curve], [s for _, s in curve], style, label=label)
            parts.append(f"{label.upper() if fam != 'adaptive' else label} "
                         + ", ".join(f"{round(e * 255)}/255: {_fmt(s)}" for e, s in curve))  # fmt: skip
    bb = result.get("blackbox", {})
    if bb.get("images"):
        ax.plot([bb["eps"] * 255], [bb["success_rate"]], "k^", label=f"black-box ({bb['images']} images)")
    sq = (result.get("square") or {}).get("frame")
    if sq:
        ax.plot([result["square"]["eps"] * 255], [sq["success_rate"]], "mD",
                label=f"Square, {result['square']['query_budget']} queries ({sq['attacked']} images)")  # fmt: skip
        parts.append(f"Square at {radius(result['square']['eps'])}: {_fmt(sq['success_rate'])} of {sq['attacked']} "
                     f"(median {_fmt(round(sq['median_queries']), False)} queries)")  # fmt: skip
    ax.set_xlabel("L-inf eps (x/255)")
    ax.set_ylabel("attack success (fakes called real)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, "robustness", f"Share of {result['attacked_fakes']} correctly detected test fakes that each attack makes "
         f"the model call real, against the perturbation budget: {'; '.join(parts)}; black-box at 8/255: "
         f"{_fmt(bb.get('success_rate'))} (median L-inf {radius(bb.get('median_linf'))} after "
         f"{_fmt(bb.get('median_queries'), False)} queries).")  # fmt: skip

    adaptive_steps_figure(result.get("defence"), plt, save)

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
    which = figs.get("anomaly_score") or {"name": "pooled Mahalanobis score (scorer.npz)", "threshold": c["anomaly_threshold"]}
    thr = which["threshold"]
    ax.axvline(thr, color="red", ls="--", label="anomaly threshold")
    ax.set_xlabel(f"anomaly score: {which['name']}")
    ax.legend(fontsize=7)
    det = ", ".join(f"{k} {_fmt(detection(rows[k])['detection_rate'])}" for k in figs.get("adv_scores", {}) if k in rows)
    ood = ", ".join(f"{k} {_fmt(detection(v)['detection_rate'])}" for k, v in result.get("ood", {}).items())
    save(fig, "mahalanobis", f"Distribution of the {which['name']} for clean, adversarial and out-of-distribution test "
         f"crops (scores above {sig(hi)} are drawn in the last bin). The dashed line is its threshold {sig(thr)}, which "
         f"flags {_fmt(c.get('defence_clean_fpr', c['clean_anomaly_rate']))} of clean test crops, adversarial crops "
         f"{det}, and out-of-distribution crops {ood}.")  # fmt: skip

    # 4. per-epoch curves from training history
    fig, ax = plt.subplots(figsize=(6, 4))
    ep = [h for h in history if "pgd_success" in h]
    if ep:
        ax.plot([h["epoch"] for h in ep], [h["pgd_success"] for h in ep], "o-", label="PGD success (val)")
        fit = [h for h in ep if "defence_detection_rate" in h]  # issue 17: epochs the shipped defence was fitted on
        if fit:
            ax.plot([h["epoch"] for h in fit], [h["defence_detection_rate"] for h in fit], "s-",
                    label="shipped defence detection rate (val)")  # fmt: skip
        ax.plot([h["epoch"] for h in ep], [_pooled(h) for h in ep], "x:", alpha=0.6,
                label="pooled-scorer detection rate (val)")  # fmt: skip
        p4 = (rows.get("pgd@4/255") or {}).get("defence")
        if p4:  # what ships, measured once on the test split after training
            ax.plot([ep[-1]["epoch"]], [p4["detection_rate"]], "r*", ms=12,
                    label="shipped defence detection rate, PGD 4/255 (test, final)")  # fmt: skip
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
            f"to {_fmt(ep[-1]['pgd_success'])} after epoch {ep[-1]['epoch']}"
        )
        if fit:
            text += (f", while the shipped defence (fitted as after training on the model of epochs "
                     f"{', '.join(str(h['epoch']) for h in fit)}) flagged {_fmt(fit[0]['defence_detection_rate'])} after "
                     f"epoch {fit[0]['epoch']} and {_fmt(fit[-1]['defence_detection_rate'])} after epoch {fit[-1]['epoch']} "
                     f"of them, at {_fmt(fit[-1].get('defence_fpr_val'))} of clean validation crops (the pooled "
                     f"Mahalanobis scorer: {_fmt(_pooled(ep[0]))} then {_fmt(_pooled(ep[-1]))}).")  # fmt: skip
        else:  # histories from before issue 17 hold only the pooled scorer's curve
            text += (f", while the pooled Mahalanobis scorer flagged {_fmt(_pooled(ep[0]))} then "
                     f"{_fmt(_pooled(ep[-1]))} of them.")  # fmt: skip
        p4 = (rows.get("pgd@4/255") or {}).get("defence")
        if p4:
            text += (f" The shipped second line (defence.npz, fitted after training) flags {_fmt(p4['detection_rate'])} "
                     "of PGD 4/255 test examples (star).")  # fmt: skip
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
            f"and anomaly score m; {flips} of {k} are called real after the attack (threshold p={sig(c['frame_threshold'], 2)})."
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
            f"(of {info['real_crops']}). Left, latents drawn at random: median {sig(c['ssim_median'])} "
            f"(10th-90th percentile {sig(c['ssim_p10'])}-{sig(c['ssim_p90'])}), {_fmt(c['called_real'])} called real by "
            f"the discriminator. Right, the same latents moved by PGD (L-inf {sig(info['eps_z'], 2)} in latent space) to make "
            f"the discriminator call the samples real: median {sig(a['ssim_median'])} "
            f"({sig(a['ssim_p10'])}-{sig(a['ssim_p90'])}), {_fmt(a['called_real'])} called real. Dashed: medians."
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


SECTIONS = {
    "robustness": "Robustness against the perturbation budget",
    "adaptive_steps": "Adaptive attack on the shipped defence, run to convergence",
    "roc": "Clean detection (ROC)",
    "mahalanobis": "Anomaly scores: clean, adversarial and out-of-distribution",
    "epochs": "Training history",
    "samples": "Adversarial examples",
    "saliency": "Where the model looks (saliency)",
    "generator_ssim": "Generator fidelity",
    "generator_samples": "Generator samples",
}
CSS = ("body{font-family:'DejaVu Sans',Arial,sans-serif;max-width:920px;margin:24px auto;padding:0 16px;color:#222;"
       "line-height:1.45;font-size:14px}h2{border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:28px}"
       ".fail{background:#fde8e8;border:2px solid #c62828;padding:8px 12px;border-radius:6px}"
       ".ok{background:#e8f5e9;border:2px solid #2e7d32;padding:8px 12px;border-radius:6px}"
       ".summary{border:2px solid #555;border-radius:6px;padding:8px 12px;margin:12px 0}"
       "td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f6f6f6}"
       "table{border-collapse:collapse;margin:6px 0}.met{color:#1b5e20;font-weight:600}.missed{color:#b71c1c;font-weight:600}"
       ".follows{font-style:italic}")  # fmt: skip


def _measured(numbers: Any, unit: str) -> str:
    """A sanity check's numbers for reading: shares as percentages, L-inf distances as k/255."""
    if isinstance(numbers, dict):
        return "; ".join(f"{k if '@' in str(k) else str(k).replace('_', ' ')}: {_measured(v, unit)}" if not isinstance(v, dict)
                         else f"{k}: " + ", ".join(f"{kk.upper() if kk in ('fgsm', 'pgd') else kk} {_measured(vv, unit)}"
                                                   for kk, vv in v.items())
                         for k, v in numbers.items())  # fmt: skip
    if isinstance(numbers, (bool, int)):
        return str(numbers)
    return radius(numbers) if unit == "linf" else pct(numbers)


def _summary_box(result: dict[str, Any]) -> list[str]:
    h = headline(jsonable({k: v for k, v in result.items() if not k.startswith("_")}))
    e = html.escape
    met = sum(bool(x["met"]) for x in h.values())
    parts = [(f"<div class='summary'><b>Summary</b>: {met} of {len(h)} targets met"
              f"{' (quick evaluation: small subsets)' if result.get('quick') else ''}."),
             "<table><tr><th>measure</th><th>measured</th><th>target</th><th>met</th><th>on what</th></tr>"]  # fmt: skip
    for key, x in h.items():
        cls, word = ("met", "yes") if x["met"] else (("missed", "no") if x["met"] is False else ("", "n/a"))
        parts.append(f"<tr><td>{e(x['label'])}</td><td><b>{format_value(key, x['value'])}</b></td>"
                     f"<td>{e(format_target(key))}</td><td class='{cls}'>{word}</td><td>{e(x['detail'])}</td></tr>")  # fmt: skip
    parts.append("</table></div>")
    return parts


def _follows(name: str, result: dict[str, Any]) -> str:
    """What a reader should conclude from a section, from its numbers."""
    rows, c = result["attacks"], result["clean"]
    pgd4 = (rows.get("pgd@4/255") or {}).get("success_rate")
    if name == "robustness":
        if pgd4 is None:
            return "No attack ran: nothing can be said about robustness."
        target = TARGETS["pgd_4_success"][1]
        if pgd4 <= target:
            return f"At 4/255 the model alone meets the {format_target('pgd_4_success')} target."
        return (f"At 4/255 an attacker with the model's weights makes {pct(pgd4)} of detected fakes pass as real "
                f"(target {format_target('pgd_4_success')}): the classifier alone is not robust, and the second line "
                "of defence below is what has to catch these inputs.")  # fmt: skip
    if name == "roc":
        auc = c.get("video_auc")
        verdict = "meets" if (auc is not None and auc >= TARGETS["clean_video_auc"][1]) else "misses"
        return (f"The clean video AUC of {sig(auc)} {verdict} the {format_target('clean_video_auc')} target; on "
                f"{c.get('videos')} test videos this estimate is itself uncertain by several points.")  # fmt: skip
    if name == "mahalanobis":
        fpr = c.get("defence_clean_fpr", c.get("clean_anomaly_rate"))
        p4 = detection(rows.get("pgd@4/255") or {}).get("detection_rate")
        text = f"Clean crops are flagged {pct(fpr)} of the time against the 5% the threshold was calibrated for"
        text += "; " if fpr is None or fpr <= TARGETS["clean_fpr"][1] else " (too often: analysts will see false alarms); "
        if p4 is not None:
            text += (f"non-adaptive PGD at 4/255 is flagged {pct(p4)} of the time, "
                     + ("so such attacks rarely pass unnoticed." if p4 >= 0.9 else "so many such attacks pass unnoticed."))
        return text
    if name == "epochs":
        return ("The per-epoch numbers are the trainer's own validation tracking with the pooled Mahalanobis "
                "scorer (the shipped defence is fitted after training); read them for trends only. Every other "
                "detection number of this report is the shipped defence's.")  # fmt: skip
    if name == "samples":
        ps = (result.get("perturbation_ssim") or {}).get("pgd@8/255")
        if ps:
            return (f"The perturbed crops keep an SSIM of {sig(ps['ssim_mean'])} to their originals on average: "
                    "a viewer cannot tell them apart, so visual inspection does not replace the detector.")  # fmt: skip
        return "No perturbed crops to compare."
    if name == "saliency":
        sal = result.get("_figures", {}).get("saliency") or {}
        if sal.get("regions"):
            bg = float(np.mean([r["background"] for r in sal["regions"]]))
            if bg > 0.5:
                return (f"{pct(bg)} of the Grad-CAM mass lies outside the face box: the model leans on background, "
                        "which will not carry over to other footage.")  # fmt: skip
            return f"Most of the Grad-CAM mass lies on the face ({pct(1 - bg)}), where swap artefacts are."
        return "Without Grad-CAM (no discriminator structure), only input gradients are shown."
    if name == "generator_ssim":
        g = result.get("ssim_generator")
        if isinstance(g, dict):
            return (f"Samples steered to look real are called real {pct(g['adversarial']['called_real'])} of the time "
                    f"against {pct(g['clean']['called_real'])} for random ones: this is how far the GAN's own fakes "
                    "can be pushed past the discriminator.")  # fmt: skip
        return "Not computed for this version."
    return ""


def write_report(result: dict[str, Any], history: list[dict], out_dir) -> Path:
    """Write the PNG figures, report.html (figures embedded) and metrics.json; returns report.html's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    captions = _figures(result, history, out)
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    (out / "metrics.json").write_text(json.dumps(jsonable(public), indent=1))

    sanity = result.get("sanity", [])
    failed = [c for c in sanity if not c["passed"]]
    e = html.escape
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Robustness report</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>Robustness report: {e(str(result.get('version', '?')))}</h1>",
             ("<p>How this model version holds up on its held-out test split: clean accuracy, white-box and black-box "
              "attacks, the second line of defence, and checks that the evaluation itself is sound. Full-precision "
              "numbers are in metrics.json beside this page.</p>")]  # fmt: skip
    parts += _summary_box(result)
    if failed:
        parts.append("<div class='fail'><b>FAILED sanity checks</b><ul>")
        parts += [f"<li><b>{e(c['name'])}</b>: expected {e(c.get('expected', ''))}; measured "
                  f"{e(_measured(c['numbers'], c.get('unit', 'rate')))}. {e(c.get('note', ''))}</li>" for c in failed]  # fmt: skip
        parts.append("</ul><p>Robustness numbers below are not trustworthy until these are explained.</p></div>")
    else:
        parts.append(f"<div class='ok'>All {len(sanity)} sanity checks passed.</div>")
    parts.append("<h2>Sanity checks</h2><p>Checks from Carlini et al. (2019) that the attacks below work as attacks "
                 "should; a failure usually means masked gradients or a broken attack, so the robustness numbers would "
                 "overstate the model.</p><table><tr><th>check</th><th>expected</th><th>measured</th><th>verdict</th></tr>")  # fmt: skip
    parts += [f"<tr><td>{e(c['name'])}</td><td>{e(c.get('expected', ''))}</td>"
              f"<td>{e(_measured(c['numbers'], c.get('unit', 'rate')))}</td>"
              f"<td class='{'met' if c['passed'] else 'missed'}'>{'pass' if c['passed'] else 'FAIL'}</td></tr>"
              for c in sanity]  # fmt: skip
    parts.append("</table>")
    shipped = any("defence" in r for r in result["attacks"].values())
    who = ("the shipped second line of defence (defence.npz) on the adversarial crops rounded to 8 bits, as a worker "
           "receives them" if shipped else "the pooled Mahalanobis scorer (scorer.npz; this version has no defence.npz)")
    parts.append(f"<h2>Attacks</h2><p>Each row attacks the {result['attacked_fakes']} correctly detected test fakes; "
                 "success is the share the model then calls real. Distances are in pixel units of [0, 1] (4/255 = "
                 f"{sig(4 / 255)}). Detection columns are those of {e(who)}. The adaptive rows (20 steps) target "
                 f"{'the shipped defence' if shipped else 'the pooled scorer'}; the same attack run to convergence is "
                 "in its own section.</p>"
                 "<table><tr><th>attack</th><th>success</th><th>median L2</th><th>median L-inf</th>"
                 "<th>detected</th><th>detector AUROC</th><th>fooled and not flagged</th></tr>")  # fmt: skip
    for name, r in result["attacks"].items():
        d = detection(r)
        parts.append(f"<tr><td>{e(name)}</td><td>{_fmt(r['success_rate'])}</td><td>{sig(r['median_l2'])}</td>"
                     f"<td>{radius(r['median_linf'])}</td><td>{_fmt(d['detection_rate'])}</td>"
                     f"<td>{sig(d['auroc'])}</td><td>{_fmt(d.get('fooled_and_undetected'))}</td></tr>")  # fmt: skip
    parts.append("</table>")
    parts += ood_table(result.get("ood") or {}, result["clean"].get("clean_gated_rate"))
    ps = result.get("perturbation_ssim") or {}
    if ps:
        parts.append("<p>How visible the attacks are (SSIM of adversarial crops to their originals, 1 = identical): "
                     + "; ".join(f"{e(k)} mean {sig(v['ssim_mean'])}, min {sig(v['ssim_min'])}" for k, v in ps.items())
                     + ".</p>")  # fmt: skip
    for name in FIGURES:
        png = out / f"{name}.png"
        b64 = base64.b64encode(png.read_bytes()).decode()
        follows = _follows(name, result)
        parts.append(f"<h2>{e(SECTIONS[name])}</h2><img alt='{name}' src='data:image/png;base64,{b64}' style='max-width:100%'>"
                     f"<p>{e(captions[name])}</p>" + (f"<p class='follows'>{e(follows)}</p>" if follows else ""))  # fmt: skip
    parts += query_section(result)
    parts += defence_section(result.get("defence"))
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path
