"""Sanity checks of a robustness evaluation (Carlini et al. 2019, "On evaluating adversarial
robustness"): success rises with eps, more steps/restarts never lower it, unbounded PGD reaches
>= 95%, FGSM <= PGD, DeepFool inside 8/255 <= PGD there, black-box (HopSkipJump, Square) <= white-box,
adaptive >= plain PGD on the whole defence (the shipped second line when the version has one), input
gradients are not zero, every attack stays in [0,1] and its L-inf ball. A failed check means the numbers are not to be
trusted (gradient masking or a broken attack), not that the model is weak."""

from __future__ import annotations

import itertools
from typing import Any

ZERO_GRAD_MAX = 0.01  # "~0" share of inputs with an exactly zero gradient
UNBOUNDED_MIN = 0.95  # unbounded PGD must reach this success rate


def detection(row: dict[str, Any]) -> dict[str, Any]:
    """An attack row's detection numbers: the shipped defence's when measured, else the pooled scorer's."""
    return row.get("defence") or row


def eps_label(eps: float) -> str:
    """An L-inf radius as shown in reports: 4/255, ..., or "unbounded" (eps >= 1)."""
    return f"{round(eps * 255)}/255" if eps < 1 else "unbounded"


def sanity_checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    """[{name, passed, numbers, note, expected, unit}] computed from the attack rows of ``result``.

    ``expected`` says in words what a sound evaluation shows; ``unit`` says how ``numbers`` read:
    "rate" (shares in [0, 1]) or "linf" (L-inf distances in [0, 1] pixel units).
    """
    rows = result["attacks"]
    n = max(1, result["attacked_fakes"])
    tol = max(0.02, 1.0 / n)  # one example of slack, at least 2 points
    slack = f"{100 * tol:.1f} points"
    checks: list[dict[str, Any]] = []

    def add(name, passed, numbers, note="", *, expected="", unit="rate"):
        checks.append({"name": name, "passed": bool(passed), "numbers": numbers, "note": note,
                       "expected": expected, "unit": unit})  # fmt: skip

    if not rows:
        add("attacks ran", False, {"attacked": 0}, "no correctly detected fake in the test split",
            expected="at least one correctly detected test fake to attack")  # fmt: skip
        return checks
    for fam in ("fgsm", "pgd"):
        curve = [(r["eps"], r["success_rate"]) for r in rows.values() if r["family"] == fam]
        curve.sort()
        ok = all(b[1] >= a[1] - tol for a, b in itertools.pairwise(curve))
        add(f"{fam} success rises with eps", ok, {eps_label(e): s for e, s in curve}, f"tolerance {tol:.3f}",
            expected=f"success never falls as the budget grows (slack {slack})")  # fmt: skip
    base = rows.get("pgd@4/255", {}).get("success_rate", float("nan"))
    for key in [k for k in rows if rows[k]["family"] in ("pgd_steps", "pgd_restarts")]:
        v = rows[key]["success_rate"]
        add(
            f"{key} >= pgd@4/255 (10 steps)",
            v >= base - tol,
            {key: v, "pgd@4/255": base},
            f"tolerance {tol:.3f}",
            expected=f"more steps or restarts never lower success (slack {slack})",
        )
    ub = rows.get("pgd@unbounded", {}).get("success_rate", float("nan"))
    add(
        "unbounded PGD reaches >= 95%",
        ub >= UNBOUNDED_MIN,
        {"pgd@unbounded": ub},
        ""
        if ub >= UNBOUNDED_MIN
        else "an unbounded attack must always win: gradients are masked or the attack is broken",
        expected=f"an unbounded attack wins on at least {100 * UNBOUNDED_MIN:.0f}% of fakes",
    )
    fg = {r["eps"]: r["success_rate"] for r in rows.values() if r["family"] == "fgsm"}
    pg = {r["eps"]: r["success_rate"] for r in rows.values() if r["family"] == "pgd"}
    ok = all(fg[e] <= pg[e] + tol for e in fg if e in pg)
    add(
        "FGSM <= PGD at every eps",
        ok,
        {eps_label(e): {"fgsm": fg[e], "pgd": pg.get(e)} for e in fg},
        f"tolerance {tol:.3f}",
        expected=f"one-step FGSM never beats iterated PGD (slack {slack})",
    )
    within = rows.get("deepfool", {}).get("success_within", {}).get("8/255")
    if within is not None and "pgd@8/255" in rows:
        pgd8 = rows["pgd@8/255"]["success_rate"]
        add("DeepFool within 8/255 <= PGD-10 at 8/255", within <= pgd8 + tol, {"deepfool": within, "pgd": pgd8},
            f"tolerance {tol:.3f}", expected="the fakes DeepFool fools inside the 8/255 ball are no more than "
            f"PGD fools there: PGD searches that ball, DeepFool only steps over the boundary (slack {slack})")  # fmt: skip
    bb = result.get("blackbox", {})
    bbs, wbs = bb.get("success_rate", float("nan")), bb.get("white_box_pgd_same_images", float("nan"))
    if bb.get("images"):
        add("black-box <= white-box (8/255, same images)", bbs <= wbs + tol, {"blackbox": bbs, "white_box_pgd": wbs},
            "a black-box attack beating white-box PGD means gradients are masked",
            expected="a query-only attack never beats white-box PGD on the same images")  # fmt: skip
    sq = (result.get("square") or {}).get("frame") or {}
    if sq.get("attacked") and "white_box_pgd_same_images" in sq:
        add("Square <= white-box PGD (4/255, same images)", sq["success_rate"] <= sq["white_box_pgd_same_images"] + tol,
            {"square": sq["success_rate"], "white_box_pgd": sq["white_box_pgd_same_images"]},
            f"{sq['attacked']} images, {sq.get('median_queries')} median queries",
            expected="a score-based attack with 5,000 queries never beats white-box PGD on the same images "
                     "(if it does, the gradients are masked)")  # fmt: skip
    # Detection numbers of the shipped second line (defence.npz) when the version has one.
    adaptive = detection(rows.get("adaptive@8/255", {})).get("fooled_and_undetected")
    plain = detection(rows.get("pgd@8/255", {})).get("fooled_and_undetected")
    if adaptive is not None and plain is not None:
        who = rows["adaptive@8/255"].get("target", "pooled scorer (scorer.npz)")
        add("adaptive >= plain PGD on the whole defence (8/255)", adaptive >= plain - tol,
            {"adaptive": adaptive, "pgd": plain}, f"tolerance {tol:.3f}; detector: {who}",
            expected=f"an attack that also targets the {who} gets at least as many fakes through it "
                     f"unflagged as plain PGD (slack {slack})")  # fmt: skip
    zg = result.get("zero_gradient_share", float("nan"))
    add(
        "share of zero input gradients ~0",
        zg <= ZERO_GRAD_MAX,
        {"zero_gradient_share": zg},
        f"at most {ZERO_GRAD_MAX}",
        expected=f"at most {100 * ZERO_GRAD_MAX:.0f}% of inputs have an exactly zero gradient",
    )
    norm_ok = all(
        r["in_range"] and (r["eps"] is None or r["linf_max"] <= r["eps"] + 1e-6) for r in rows.values()
    )
    add("every attack stays in [0,1] and its L-inf ball", norm_ok,
        {k: r["linf_max"] for k, r in rows.items() if r["eps"] is not None},
        expected="pixels stay in [0, 1] and each perturbation within its budget", unit="linf")  # fmt: skip
    return checks
