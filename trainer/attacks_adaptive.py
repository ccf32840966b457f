"""The adaptive attack on a classifier and its detector together, and running it to convergence.

An adaptive attacker knows the whole defence (Carlini & Wagner 2017; Athalye et al. 2018; Tramer et
al. 2020 "On adaptive attacks to adversarial example defenses"): it attacks the classifier and the
detector at once, differentiates through non-differentiable parts with their straight-through
approximation (BPDA, done by :class:`trainer.defence.TorchDefence` for the squeezers), averages its
gradient over any randomness of the defence (EOT) and runs until more steps stop helping
(:func:`run_to_convergence`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

# Step counts tried in turn; the attack has converged once the next one adds < MIN_GAIN success.
STEP_SCHEDULE = (10, 20, 50, 100, 200)
MIN_GAIN = 0.01
EOT_SAMPLES = 8  # gradient samples per step against a defence with randomness


def adaptive_attack(det: nn.Module, x: torch.Tensor, clip: torch.Tensor | None, *, z_thr: float, s_thr: float,
                    z_scale: float, s_scale: float, eps: float = 4 / 255, steps: int = 20, gen=None,
                    eot: int = 1) -> torch.Tensor:  # fmt: skip
    """L-inf PGD (radius ``eps``) on hinge(logit) + hinge(detector score), both scaled by their clean spread.

    ``det`` maps float32 [N,3,S,S] in [0,1] to (logits [N], detector score [N]), e.g.
    :class:`trainer.defence.TorchDefence` (the shipped defence) or :class:`trainer.defence.WithScore`;
    z_thr / s_thr are the thresholds of both, z_scale / s_scale the spread of clean logits and scores
    (they put the two hinge terms on one scale), and the margins are 5% of them so a success does not
    sit exactly on a threshold. ``eot`` > 1 averages the gradient of that many forward passes per step
    (Expectation over Transformation), for a ``det`` with randomness; for a deterministic one, 1 is exact.

    clip: None attacks every frame on its own; else int64 [N] clip ids and the hinges apply to each
    clip's MEAN logit and MEAN score (the per-track rule), so the attacker perturbs the whole clip.
    Returns x_adv float32 [N,3,S,S] in [0,1], ``|x_adv - x| <= eps``, detached.
    """
    if steps < 1 or eot < 1:
        raise ValueError(f"steps and eot must be >= 1, got {steps}, {eot}")
    alpha = 2.5 * eps / steps
    x0 = x.detach()
    xa = torch.clamp(x0 + torch.empty_like(x0).uniform_(-eps, eps, generator=gen), 0, 1)
    for _ in range(steps):
        g = torch.zeros_like(x0)
        for _ in range(eot):
            xs = xa.detach().requires_grad_(True)
            z, s = det(xs)
            z = z.double()
            if clip is not None:
                k = int(clip.max()) + 1
                cnt = torch.zeros(k, dtype=torch.float64).index_add_(0, clip, torch.ones_like(z))
                z = torch.zeros(k, dtype=torch.float64).index_add_(0, clip, z) / cnt
                s = torch.zeros(k, dtype=torch.float64).index_add_(0, clip, s.double()) / cnt
            loss = (
                torch.relu(z - z_thr + 0.05 * z_scale) / z_scale
                + torch.relu(s - s_thr + 0.05 * s_scale) / s_scale
            )
            g += torch.autograd.grad(loss.sum(), xs)[0]
        with torch.no_grad():
            xa = torch.clamp(x0 + torch.clamp(xa - alpha * g.sign() - x0, -eps, eps), 0, 1)
    return xa.detach()


def run_to_convergence(attack: Callable[[int], tuple[np.ndarray, dict[str, float]]],
                       schedule: tuple[int, ...] = STEP_SCHEDULE, min_gain: float = MIN_GAIN) -> dict[str, Any]:  # fmt: skip
    """Run ``attack(steps)`` for growing step counts until the attacker's success stops rising.

    ``attack(steps)`` runs the attack afresh with that many steps and returns (bool [K]: which of the K
    targets, frames or tracks, it got through; a dict of other rates of that run, e.g. fooled and
    detected). The attacker keeps, per target, any run that won, so the success after each step count
    is the share won by any run so far ("best_so_far"); the schedule stops once a step count adds less
    than ``min_gain`` to it. ``converged`` is False when the schedule ran out while success was still
    rising by ``min_gain`` or more: then the number is a lower bound. Returns {"curve": [{"steps",
    "success" (this run alone), "best_so_far", **rates}], "combined_success" (best_so_far at the end),
    "converged", "steps" (the last step count run)}.
    """
    if not schedule:
        raise ValueError("empty step schedule")
    curve: list[dict[str, Any]] = []
    won: np.ndarray | None = None
    converged = False
    for steps in schedule:
        ok, rates = attack(steps)
        ok = np.asarray(ok, bool)
        before = float(won.mean()) if won is not None and len(won) else None
        won = ok if won is None else (won | ok)
        best = float(won.mean()) if len(won) else float("nan")
        curve.append({"steps": steps, "success": float(ok.mean()) if len(ok) else float("nan"), "best_so_far": best,
                      **rates})  # fmt: skip
        if before is not None and not best - before >= min_gain:
            converged = True
            break
    return {"curve": curve, "combined_success": curve[-1]["best_so_far"], "converged": converged,
            "steps": curve[-1]["steps"]}  # fmt: skip
