"""Sanity checks of a robustness evaluation (Carlini et al. 2019, "On evaluating adversarial
robustness"): success rises with eps, more steps/restarts never lower it, unbounded PGD reaches
>= 95%, FGSM <= PGD, black-box <= white-box, adaptive >= plain PGD on the whole defence, input
gradients are not zero, every attack stays in [0,1] and its L-inf ball. A failed check means the
numbers are not to be trusted (gradient masking or a broken attack), not that the model is weak."""

from __future__ import annotations

import itertools
from typing import Any

ZERO_GRAD_MAX = 0.01  # "~0" share of inputs with an exactly zero gradient
UNBOUNDED_MIN = 0.95  # unbounded PGD must reach this success rate


def eps_label(eps: float) -> str:
    """An L-inf radius as shown in reports: 4/255, ..., or "unbounded" (eps >= 1)."""
    return f"{round(eps * 255)}/255" if eps < 1 else "unbounded"


def sanity_checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    """[{name, passed, numbers, note}] computed from the attack rows of ``result``."""
    rows = result["attacks"]
    n = max(1, result["attacked_fakes"])
    tol = max(0.02, 1.0 / n)  # one example of slack, at least 2 points
    checks: list[dict[str, Any]] = []

    def add(name, passed, numbers, note=""):
        checks.append({"name": name, "passed": bool(passed), "numbers": numbers, "note": note})

    if not rows:
        add("attacks ran", False, {"attacked": 0}, "no correctly detected fake in the test split")
        return checks
    for fam in ("fgsm", "pgd"):
        curve = [(r["eps"], r["success_rate"]) for r in rows.values() if r["family"] == fam]
        curve.sort()
        ok = all(b[1] >= a[1] - tol for a, b in itertools.pairwise(curve))
        add(f"{fam} success rises with eps", ok, {eps_label(e): s for e, s in curve}, f"tolerance {tol:.3f}")
    base = rows.get("pgd@4/255", {}).get("success_rate", float("nan"))
    for key in [k for k in rows if rows[k]["family"] in ("pgd_steps", "pgd_restarts")]:
        v = rows[key]["success_rate"]
        add(
            f"{key} >= pgd@4/255 (10 steps)",
            v >= base - tol,
            {key: v, "pgd@4/255": base},
            f"tolerance {tol:.3f}",
        )
    ub = rows.get("pgd@unbounded", {}).get("success_rate", float("nan"))
    add(
        "unbounded PGD reaches >= 95%",
        ub >= UNBOUNDED_MIN,
        {"pgd@unbounded": ub},
        ""
        if ub >= UNBOUNDED_MIN
        else "an unbounded attack must always win: gradients are masked or the attack is broken",
    )
    fg = {r["eps"]: r["success_rate"] for r in rows.values() if r["family"] == "fgsm"}
    pg = {r["eps"]: r["success_rate"] for r in rows.values() if r["family"] == "pgd"}
    ok = all(fg[e] <= pg[e] + tol for e in fg if e in pg)
    add(
        "FGSM <= PGD at every eps",
        ok,
        {eps_label(e): {"fgsm": fg[e], "pgd": pg.get(e)} for e in fg},
        f"tolerance {tol:.3f}",
    )
    bb = result.get("blackbox", {})
    bbs, wbs = bb.get("success_rate", float("nan")), bb.get("white_box_pgd_same_images", float("nan"))
    if bb.get("images"):
        add("black-box <= white-box (8/255, same images)", bbs <= wbs + tol, {"blackbox": bbs, "white_box_pgd": wbs},
            "a black-box attack beating white-box PGD means gradients are masked")  # fmt: skip
    adaptive = rows.get("adaptive@8/255", {}).get("fooled_and_undetected")
    plain = rows.get("pgd@8/255", {}).get("fooled_and_undetected")
    if adaptive is not None and plain is not None:
        add("adaptive >= plain PGD on the whole defence (8/255)", adaptive >= plain - tol,
            {"adaptive": adaptive, "pgd": plain}, f"tolerance {tol:.3f}")  # fmt: skip
    zg = result.get("zero_gradient_share", float("nan"))
    add(
        "share of zero input gradients ~0",
        zg <= ZERO_GRAD_MAX,
        {"zero_gradient_share": zg},
        f"at most {ZERO_GRAD_MAX}",
    )
    norm_ok = all(
        r["in_range"] and (r["eps"] is None or r["linf_max"] <= r["eps"] + 1e-6) for r in rows.values()
    )
    add("every attack stays in [0,1] and its L-inf ball", norm_ok,
        {k: r["linf_max"] for k, r in rows.items() if r["eps"] is not None})  # fmt: skip
    return checks
