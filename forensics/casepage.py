"""How a case reads: the fake-probability timeline (inline SVG), the text that explains a verdict,
its flags and limitations, and the page itself (HTML, and PDF through headless Chromium).

:mod:`forensics.casereport` builds a :class:`~forensics.casereport.Case` from a scan or an alert;
this module only renders one, so the web console and ``forensics report`` show the same page.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, select_autoescape

from forensics import __version__
from forensics.errors import ForensicsError
from forensics.robustness import format_target, format_value, pct, sig
from forensics.verdicts import QUALITY_REASONS, CropRecord

if TYPE_CHECKING:
    from forensics.casereport import Case

MIN_TRACK_FACES = 3  # forensics.verdicts.file_verdict's default: shorter tracks cannot flip a file
CHROMIUM = "/usr/bin/chromium"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---- the timeline -------------------------------------------------------------------------------

PALETTE = ("#1f77b4", "#9467bd", "#2ca02c", "#8c564b", "#17becf", "#7f7f7f")


def timeline_svg(records: list[CropRecord], threshold: float | None, *, evidence: list[dict] | None = None,
                 width: int = 760, height: int = 240) -> str:  # fmt: skip
    """An inline SVG: fake probability [0,1] of every crop against time (s, or frame when times are
    missing), one line per face track, the threshold dashed, anomalous crops ringed in orange and the
    report's evidence crops numbered."""
    left, right, top, bottom = 48, 150, 12, 34
    pw, ph = width - left - right, height - top - bottom
    use_t = bool(records) and all(c.pts is not None for c in records)
    xs = [float(c.pts) if use_t else float(c.frame) for c in records] or [0.0, 1.0]
    x0, x1 = min(xs), max(xs)
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - 0.5, x1 + 0.5
    X = lambda v: left + (v - x0) / (x1 - x0) * pw
    Y = lambda p: top + (1 - p) * ph
    el = [f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' width='{width}' height='{height}' "
          f"role='img' aria-label='fake probability per face track over time' font-family='sans-serif' font-size='11'>",
          f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='#fafafa' stroke='#bbb'/>"]  # fmt: skip
    for p in (0, 0.25, 0.5, 0.75, 1):
        el.append(f"<line x1='{left}' x2='{left + pw}' y1='{Y(p):.1f}' y2='{Y(p):.1f}' stroke='#e4e4e4'/>"
                  f"<text x='{left - 6}' y='{Y(p) + 4:.1f}' text-anchor='end'>{p:g}</text>")  # fmt: skip
    for v, label in _ticks(x0, x1):
        el.append(f"<line x1='{X(v):.1f}' x2='{X(v):.1f}' y1='{top + ph}' y2='{top + ph + 4}' stroke='#999'/>"
                  f"<text x='{X(v):.1f}' y='{top + ph + 16}' text-anchor='middle'>{label}</text>")  # fmt: skip
    el.append(f"<text x='{left + pw / 2:.0f}' y='{height - 4}' text-anchor='middle'>"
              f"{'time in the video (s)' if use_t else 'frame'}</text>"
              f"<text transform='translate(12 {top + ph / 2:.0f}) rotate(-90)' text-anchor='middle'>fake probability</text>")  # fmt: skip
    if threshold is not None:
        el.append(f"<line x1='{left}' x2='{left + pw}' y1='{Y(threshold):.1f}' y2='{Y(threshold):.1f}' stroke='#d62728' "
                  f"stroke-dasharray='6 4' stroke-width='1.5'/>")  # fmt: skip
    tracks: dict[str, list[CropRecord]] = {}
    for c in records:
        tracks.setdefault(str(c.track), []).append(c)
    legend_y = top + 6
    for i, (name, recs) in enumerate(sorted(tracks.items())):
        color = PALETTE[i % len(PALETTE)]
        recs.sort(key=lambda c: c.frame)
        pts = " ".join(f"{X(float(c.pts) if use_t else c.frame):.1f},{Y(c.prob):.1f}" for c in recs)
        el.append(f"<polyline points='{pts}' fill='none' stroke='{color}' stroke-width='1.6'/>")
        for c in recs:
            cx, cy = X(float(c.pts) if use_t else c.frame), Y(c.prob)
            el.append(f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='2.2' fill='{color}'/>")
            if c.anomalous:
                el.append(f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='5' fill='none' stroke='#ff7f0e' stroke-width='1.5'/>")
        mean = sum(c.prob for c in recs) / len(recs)
        label = "whole frame" if name == "None" else f"track {name}"
        el.append(f"<line x1='{left + pw + 10}' x2='{left + pw + 26}' y1='{legend_y}' y2='{legend_y}' stroke='{color}' "
                  f"stroke-width='2'/><text x='{left + pw + 30}' y='{legend_y + 4}'>{label}: mean {sig(mean, 2)}</text>")  # fmt: skip
        legend_y += 16
    if threshold is not None:
        el.append(f"<line x1='{left + pw + 10}' x2='{left + pw + 26}' y1='{legend_y}' y2='{legend_y}' stroke='#d62728' "
                  f"stroke-dasharray='4 3'/><text x='{left + pw + 30}' y='{legend_y + 4}'>threshold {sig(threshold, 3)}</text>")  # fmt: skip
        legend_y += 16
    if any(c.anomalous for c in records):
        el.append(f"<circle cx='{left + pw + 18}' cy='{legend_y}' r='5' fill='none' stroke='#ff7f0e' stroke-width='1.5'/>"
                  f"<text x='{left + pw + 30}' y='{legend_y + 4}'>anomalous crop</text>")  # fmt: skip
    for ev in evidence or []:
        v = ev["pts"] if use_t and ev.get("pts") is not None else ev["frame"]
        if x0 <= float(v) <= x1:
            el.append(f"<text x='{X(float(v)):.1f}' y='{Y(ev['fake_prob']) - 7:.1f}' text-anchor='middle' "
                      f"font-weight='bold' font-size='10'>{ev['rank']}</text>")  # fmt: skip
    el.append("</svg>")
    return "".join(el)


def _ticks(lo: float, hi: float, n: int = 6) -> list[tuple[float, str]]:
    """Round axis ticks (steps of 1, 2, 2.5 or 5 x 10^k) between lo and hi, with their labels."""
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    decimals = max(0, -math.floor(math.log10(step)) + (1 if step / mag == 2.5 else 0))
    first = math.ceil(lo / step - 1e-9) * step
    count = int(math.floor((hi - first) / step + 1e-9)) + 1
    return [(first + i * step, f"{first + i * step:.{decimals}f}") for i in range(count)]


# ---- words --------------------------------------------------------------------------------------


def meaning(case: Case) -> str:
    """What the verdict's score means, in plain words, from its own numbers."""
    v = case.verdict
    label, score, thr = v.get("label"), v.get("score"), v.get("threshold")
    if case.kind in ("anomaly", "source"):
        return ""
    if label == "NO_FACES":
        return ("No face was found in any sampled frame, so the model did not judge this file. It says nothing "
                "about whether the video is genuine.")  # fmt: skip
    if label == "ERROR":
        return f"The file could not be judged: {v.get('error')}."
    if score is None or thr is None:
        return ""
    if case.kind == "deepfake":
        return (f"The mean fake probability of the {v.get('faces')} faces in the last {sig(v.get('window_s'), 2)} s of this "
                f"live source was {sig(score)}, above its threshold {sig(thr)} plus the hysteresis margin.")  # fmt: skip
    tracks = v.get("tracks") or {}
    hot = [k for k, t in tracks.items() if t.get("faces", 0) >= MIN_TRACK_FACES and t.get("score", 0) > thr]
    text = (f"The score is the mean fake probability over all {v.get('faces_scored')} face crops scored in "
            f"{v.get('frames_scored')} frames: 0 means the model sees nothing of a face swap, 1 means it is certain of "
            f"one. It is compared with the threshold {sig(thr)}, calibrated on the model's validation videos with the "
            f"same rule. A file is called FAKE when its score is over the threshold, or when any face track of at "
            f"least {MIN_TRACK_FACES} crops has a mean over it, so one swapped face among real ones is not averaged away. ")  # fmt: skip
    if label == "FAKE":
        why = []
        if score > thr:
            why.append(f"the file's score {sig(score)} is over the threshold")
        if hot:
            why.append(f"track{'s' if len(hot) > 1 else ''} {', '.join(hot)} "
                       f"{'are' if len(hot) > 1 else 'is'} over it on {'their' if len(hot) > 1 else 'its'} own")  # fmt: skip
        text += f"Here {' and '.join(why)}."
    else:
        text += f"Here the score {sig(score)} and every track's mean are at or under the threshold."
    margin = abs(score - thr)
    if margin < 0.05:
        text += f" The score is within {sig(margin, 2)} of the threshold: a borderline call."
    return text


def flags_text(case: Case) -> list[str]:
    """One sentence per anomaly (or low-quality) flag on the case, saying what it means."""
    v, m = case.verdict, case.model
    out = []
    rate = v.get("anomaly_rate")
    fpr = (m.get("headline") or {}).get("clean_fpr", {}).get("value") if m.get("headline") else None
    expected = f" On clean test crops this detector flags {pct(fpr)}." if fpr is not None else ""
    what = ("the second line of defence (defence.npz: feature statistics and agreement under small input "
            "transforms)" if m.get("defence") else "the Mahalanobis scorer on the model's features")
    if rate is not None:
        flagged = sum(c.anomalous for c in case.records)
        out.append(f"{pct(rate)} of the crops ({flagged} of {len(case.records) or v.get('faces_scored')}) were flagged "
                   f"anomalous by {what}: their features lie outside what the model saw in clean training data, as "
                   f"adversarially perturbed or out-of-distribution input (heavy blur, compression, non-faces) does.{expected}")  # fmt: skip
    n_tracks = v.get("anomalous_tracks")
    if n_tracks:
        out.append(f"{n_tracks} face track{' has' if n_tracks == 1 else 's have'} a mean anomaly score over the track threshold: a perturbation "
                   "crafted frame by frame shifts every frame a little, which the mean over a track keeps. Treat the "
                   "verdict on such a track as possibly manipulated against the detector.")  # fmt: skip
    elif n_tracks == 0:
        out.append("No face track's mean anomaly score is over the track threshold.")
    lq = [c for c in case.records if c.low_quality]
    if lq:
        why = ", ".join(f"{sum(q in c.low_quality for c in lq)} {q.replace('_', ' ')}" for q in QUALITY_REASONS
                        if any(q in c.low_quality for c in lq))  # fmt: skip
        out.append(f"{len(lq)} crops were marked low quality by the input-quality gate ({why}): blurred, visibly "
                   "block-coded or cut from a face too small to hold the detail the model was trained on. They count in "
                   "the score like every crop, but the model's score on them is less reliable.")  # fmt: skip
    if case.kind == "anomaly":
        out.append(f"This is an anomaly alert: the anomaly rate {pct(v.get('anomaly_rate'))} passed "
                   f"{pct(v.get('rate_threshold'))}, or a track's mean score passed the track threshold.")  # fmt: skip
    return out


def limitations(case: Case) -> str:
    """The limitations paragraph, written from the case's own numbers and the model's headline."""
    v, m = case.verdict, case.model
    parts = []
    faces = v.get("faces_scored", v.get("faces"))
    if faces is not None:
        parts.append(f"This verdict rests on {faces} face crop{'s' if faces != 1 else ''}"
                     + (f" from {v.get('frames_scored')} of {v.get('frames_sampled')} sampled frames "
                        f"({v.get('frames_decoded')} decoded)" if v.get("frames_sampled") is not None else "") + ".")  # fmt: skip
        if isinstance(faces, int) and faces < 10:
            parts.append("So few crops make the score noisy.")
    if m.get("synthetic_only"):
        parts.append("The model was trained on synthetic faces only: its verdicts on real video are not meaningful.")
    elif m.get("available") and not m.get("provenance"):
        parts.append("The model's manifest does not record what it was trained on; if that was synthetic data alone "
                     "(the demo model), its verdicts on real video are not meaningful.")  # fmt: skip
    h = m.get("headline")
    if h:
        auc, pgd, ada, fpr = (h[k]["value"] for k in ("clean_video_auc", "pgd_4_success", "adaptive_success", "clean_fpr"))
        parts.append(f"On its own held-out test split the model separates real from fake videos with an AUC of "
                     f"{format_value('clean_video_auc', auc)} (target {format_target('clean_video_auc')}).")  # fmt: skip
        if pgd is not None:
            parts.append(f"An attacker who has the model can make {pct(pgd)} of detected fakes pass as real with "
                         f"perturbations of 4/255 per pixel, invisible to the eye (target {format_target('pgd_4_success')})"
                         + (f"; {pct(ada)} pass while also evading the second line of defence" if ada is not None else "")
                         + ".")  # fmt: skip
        if fpr is not None:
            parts.append(f"The second line flags {pct(fpr)} of clean test crops, so a few anomalous crops alone are "
                         "weak evidence of manipulation.")  # fmt: skip
        if m.get("eval_quick"):
            parts.append("These robustness numbers come from the quick evaluation at the end of training (small "
                         "subsets); forensics eval gives the full one.")  # fmt: skip
    else:
        parts.append("The model has no robustness report, so how it behaves under attack is not known.")
    parts.append("A REAL verdict means the model found no evidence of a face swap, not that the video is authentic; "
                 "it does not judge voice, edits between shots, or manipulations other than face swaps.")  # fmt: skip
    return " ".join(parts)


# ---- rendering ------------------------------------------------------------------------------------

_env = Environment(loader=PackageLoader("forensics", "templates"), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)  # fmt: skip
_env.filters.update(pct=pct, sig=sig)


def _size(n: Any) -> str:
    """A byte count for people: "52.1 KiB (53,391 bytes)"."""
    if not isinstance(n, int):
        return "n/a"
    value, unit = float(n), "bytes"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{n} bytes" if unit == "bytes" else f"{sig(value, 3)} {unit} ({n:,} bytes)"


def render_html(case: Case) -> str:
    """The case report as one self-contained HTML page (no external assets)."""
    v = case.verdict
    threshold = v.get("threshold")
    return _env.get_template("case.html").render(
        case=case, v=v, m=case.model, file=case.file, times=case.times,
        timeline=timeline_svg(case.records, threshold, evidence=case.evidence) if case.records else None,
        meaning=meaning(case), flags=flags_text(case), limitations=limitations(case),
        headline=case.model.get("headline"), format_value=format_value, format_target=format_target,
        size=_size(case.file.get("size_bytes")) if case.file else None,
        generated=_now(), forensics_version=__version__,
        tracks=sorted((v.get("tracks") or {}).items(), key=lambda kv: -float(kv[1].get("score") or 0)),
    )  # fmt: skip


def write_html(case: Case, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_html(case), encoding="utf-8")
    os.replace(tmp, out)
    return out


def chromium_path() -> str | None:
    """Headless Chromium for PDFs (apt package ``chromium``), or None."""
    return shutil.which("chromium") or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)


def write_pdf(html_path: str | Path, pdf_path: str | Path, *, timeout: float = 120) -> Path:
    """Print the HTML page to PDF with headless Chromium (nothing fetched: the page is self-contained)."""
    exe = chromium_path()
    if exe is None:
        raise ForensicsError("--pdf needs Chromium: apt-get install chromium (or open the HTML report and print it)")
    pdf_path = Path(pdf_path).resolve()
    with tempfile.TemporaryDirectory(prefix="forensics-chromium-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--no-pdf-header-footer",
               f"--print-to-pdf={pdf_path}", Path(html_path).resolve().as_uri()]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ForensicsError(f"Chromium did not print the PDF within {timeout:.0f} s") from None
    if proc.returncode != 0 or not pdf_path.is_file() or pdf_path.stat().st_size == 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ForensicsError(f"Chromium could not print {pdf_path.name}: {last}")
    return pdf_path
