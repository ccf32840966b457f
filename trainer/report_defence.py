"""The report's sections on the second line of defence and on the query and adaptive attacks.

HTML fragments and one figure for :func:`trainer.report.write_report`: the defence methods table,
the adaptive attack run to convergence on the shipped defence (its step curve, per frame and per
track), the Square attack through ONNX Runtime (per frame and per track), and the out-of-distribution
table (flagged or gated).
"""

from __future__ import annotations

import html
import math
from typing import Any

from forensics.robustness import TARGETS, format_target, pct, radius, sig
from trainer.sanity import detection

_PART = {"adaptive_frame": "per frame", "adaptive_track": "per track", "frame": "per frame", "track": "per track"}


def _count(v: Any) -> str:
    """A (median) count of queries as a whole number."""
    return f"{float(v):.0f}" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def adaptive_steps_figure(d: dict[str, Any] | None, plt, save) -> None:
    """Figure ``adaptive_steps``: combined success (called real AND not flagged) against PGD steps."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    parts = []
    for key, style in (("adaptive_frame", "o-"), ("adaptive_track", "s-")):
        r = (d or {}).get(key)
        if not r:
            continue
        steps = [c["steps"] for c in r["curve"]]
        ax.plot(steps, [c["best_so_far"] for c in r["curve"]], style, label=f"{_PART[key]}: best of runs so far")
        ax.plot(steps, [c["success"] for c in r["curve"]], style[0] + ":", alpha=0.6, label=f"{_PART[key]}: this run")
        parts.append(f"{_PART[key]} ({r['attacked']} {'fakes' if key == 'adaptive_frame' else 'tracks'}): "
                     + ", ".join(f"{c['steps']} steps {pct(c['best_so_far'])}" for c in r["curve"])
                     + ("" if r["converged"] else " (still rising when the schedule ended: a lower bound)"))  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("PGD steps")
    ax.set_ylabel("called real and not flagged")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if parts:
        ax.legend(fontsize=7)
        r = d.get("adaptive_frame") or d.get("adaptive_track")
        text = (f"The adaptive attack at {radius(r['eps'])} (PGD on the logit and the shipped detector's score at once, "
                f"BPDA through the squeezers {', '.join(r['bpda']) or 'none'}, {r['eot_samples']} gradient sample(s) per "
                f"step: the defence has {'randomness (EOT)' if r['eot_samples'] > 1 else 'no randomness'}) for growing "
                f"step counts until one adds less than {pct(r['min_gain'])}: " + "; ".join(parts) + ".")  # fmt: skip
    else:
        text = "Not run: this version has no second line of defence (defence.npz) or no detected fake to attack."
    save(fig, "adaptive_steps", text)


def ood_table(ood: dict[str, Any], clean_gated: float | None) -> list[str]:
    """Out-of-distribution sets: flagged by the detector, marked low_quality by the gate (no_face among
    its reasons), either (target >= 90%)."""
    if not ood:
        return []
    e = html.escape
    rows = "".join(f"<tr><td>{e(k)}</td><td>{pct(detection(v)['detection_rate'])}</td><td>{pct(v.get('gated_rate'))}</td>"
                   f"<td>{pct(v.get('no_face_rate'))}</td><td>{pct(v.get('flagged_or_gated_rate'))}</td></tr>"
                   for k, v in ood.items())  # fmt: skip
    check = next((v["face_check"] for v in ood.values() if v.get("face_check")), None)
    face = (f"; no face: the face check ({e(check)}, the detector the model's crops were made with) finds no face in the "
            "crop, which the detect worker marks <code>no_face</code> in whole-frame mode and face mode's ingest would not "
            "have cut") if check else ""  # fmt: skip
    return [("<h2>Out-of-distribution crops</h2><p>Flagged: anomalous by the detector of the attack table; gated: marked "
            f"low_quality by the input-quality gate at its defaults (it marks {pct(clean_gated)} of clean test crops){face}. "
            "Target: flagged or gated &ge; 90%.</p><table><tr><th>set</th><th>flagged</th><th>gated</th>"
            f"<th>of which no face</th><th>flagged or gated</th></tr>{rows}</table>")]  # fmt: skip


def query_section(result: dict[str, Any]) -> list[str]:
    """HTML of the Square attack through ONNX Runtime, per frame and per track."""
    sq = result.get("square") or {}
    rows = [(k, sq[k]) for k in ("frame", "track") if sq.get(k)]
    if not rows:
        return []
    e = html.escape
    parts = [(f"<h2>Query attack with a real budget (Square)</h2><p>The Square attack (score-based random search, "
             f"torchattacks' implementation) through ONNX Runtime, as an attacker with only the deployed model's "
             f"scores would run it: L-inf {radius(sq['eps'])}, at most {sq['query_budget']} queries per crop. Per "
             "frame: correctly detected test fakes, success = called real. Per track: every crop of fake videos the "
             "model calls fake, each pushed to the video threshold; success = the video verdict (mean fake "
             "probability) flips to REAL. Not flagged: the shipped defence does not flag the crop (the track's mean "
             "score).</p><table><tr><th>unit</th><th>attacked</th><th>success</th><th>median queries</th>"
             "<th>fooled and not flagged</th><th>white-box PGD, same images</th><th>seconds</th></tr>")]  # fmt: skip
    for k, r in rows:
        unit = f"{_PART[k]}" + (f" ({r['crops']} crops)" if "crops" in r else "")
        parts.append(f"<tr><td>{e(unit)}</td><td>{r['attacked']}</td><td>{pct(r['success_rate'])}</td>"
                     f"<td>{_count(r['median_queries'])}</td><td>{pct(r.get('fooled_and_undetected'))}</td>"
                     f"<td>{pct(r.get('white_box_pgd_same_images'))}</td><td>{sig(r['seconds'], 2)}</td></tr>")  # fmt: skip
    parts.append("</table>")
    f = sq.get("frame") or {}
    wb = f.get("white_box_pgd_same_images")
    if f and wb is not None:
        parts.append("<p class='follows'>" + (
            f"With {sq['query_budget']} queries and no gradients, Square fools {pct(f['success_rate'])} of the fakes "
            f"white-box PGD fools {pct(wb)} of: " + ("the query attack is weaker, as it should be." if
                                                     f["success_rate"] <= wb else
                                                     "the query attack is STRONGER than white-box PGD, a sign of masked "
                                                     "gradients: the white-box numbers understate the attacker.")) + "</p>")  # fmt: skip
    return parts


def defence_section(d: dict[str, Any] | None) -> list[str]:
    """HTML of the second line of defence (issue 8): the methods table and the converged adaptive attacks."""
    if not d:
        return []
    e = html.escape
    head = (f"<h2>Second line of defence</h2><p>Every candidate detector, fitted on validation data, scored on the same "
            f"PGD-10 examples at {radius(d['eps'])} ({d['fooling_examples']} crops that fool the model, "
            f"{d['fooled_tracks']} fooled face tracks) and clean test crops; the shipped one is in bold. "
            f"Extra cost counts model passes and numpy time per face (one ONNX pass: {sig(d.get('onnx_ms_per_face'), 2)} ms).</p>"
            "<table><tr><th>method</th><th>AUROC</th><th>detected @ val 5% FPR</th>"
            "<th>clean FPR</th><th>track AUROC</th><th>track detected</th><th>track clean FPR</th><th>OOD</th>"
            "<th>extra passes</th><th>extra ms/face</th></tr>")  # fmt: skip
    parts = [head]
    for name, m in d["methods"].items():
        label = f"<b>{e(name)} (shipped)</b>" if m["shipped"] else e(name)
        parts.append(f"<tr><td>{label}</td><td>{sig(m['auroc'])}</td><td>{pct(m['detection_rate'])}</td>"
                     f"<td>{pct(m['clean_fpr'])}</td><td>{sig(m['track_auroc'])}</td>"
                     f"<td>{pct(m['track_detection_rate'])}</td><td>{pct(m['track_clean_fpr'])}</td>"
                     f"<td>{pct(m['ood_all'])}</td><td>{m['extra_passes']}</td><td>{sig(m['extra_ms_per_face'], 2)}</td></tr>")  # fmt: skip
    parts.append("</table>")
    rows = [(k, d[k]) for k in ("adaptive_frame", "adaptive_track") if k in d]
    if rows:
        parts.append("<p>Adaptive attack on the shipped detector, run to convergence (it knows the detector; BPDA "
                     "through the squeezers; the track attack perturbs whole clips against the track-mean rules; the "
                     "attacker keeps any run that won; the step curve is the figure above): "
                     + "; ".join(f"{_PART[k]}: {r['attacked']} attacked, at {r['steps']} steps fooled {pct(r['fooled'])} "
                                 f"and detected {pct(r['detected'])}, <b>combined success {pct(r['combined_success'])}</b>"
                                 + ("" if r.get("converged", True) else " (not converged: a lower bound)")
                                 for k, r in rows) + ".</p>")  # fmt: skip
        worst = max(r["combined_success"] for _, r in rows)
        target = TARGETS["adaptive_success"][1]
        parts.append("<p class='follows'>" + (
            f"An attacker who knows the whole defence gets at most {pct(worst)} of fakes through unflagged, within "
            f"the {e(format_target('adaptive_success'))} target." if worst <= target else
            f"An attacker who knows the whole defence gets up to {pct(worst)} of fakes through unflagged (target "
            f"{e(format_target('adaptive_success'))}): the second line raises the cost of an attack but does not stop "
            "a determined, informed attacker.") + "</p>")  # fmt: skip
    return parts
