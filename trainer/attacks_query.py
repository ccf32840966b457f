"""Query-based (black-box) attacks through a query function, ONNX Runtime in the evaluation.

A query function maps float32 numpy [N,3,S,S] in [0,1] to logits [N] (logit > threshold: FAKE).

- :func:`square`: the Square attack (Andriushchenko et al. 2020), score-based L-inf random search,
  run by torchattacks' own ``Square`` on :class:`QueryModule`, a torch module whose forward is one
  call of the query function (no gradient anywhere), with every query counted;
- :func:`hop_skip_jump`: a compact decision-based L-inf attack (HopSkipJump, Chen et al. 2020).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torchattacks
from torch import nn

# A black-box query: float32 numpy [N,3,S,S] in [0,1] -> logits [N].
QueryFn = Callable[[np.ndarray], np.ndarray]

SQUARE_QUERIES = 5000  # per image, the budget of Andriushchenko et al.'s ImageNet tables
SQUARE_EPS = 4 / 255


class QueryModule(nn.Module):
    """A query function as a two-class torch model for torchattacks: x float32 [N,3,S,S] -> [N, 2] = [0, z - t].

    ``t`` is the logit threshold (``logit(frame_prob)``), so class 1 (FAKE) wins exactly when the
    deployed decision says FAKE, and cross-entropy on [0, z - t] is BCE on z - t. ``queries`` counts
    the images sent to ``query`` (one per row of every call), ``calls`` the calls.
    """

    def __init__(self, query: QueryFn, threshold: float = 0.0) -> None:
        super().__init__()
        self.query, self.threshold = query, float(threshold)
        self.queries = self.calls = 0
        # torchattacks reads the device from the first parameter (and prints a warning without one).
        self.register_parameter("_device", nn.Parameter(torch.zeros(0), requires_grad=False))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        z = torch.from_numpy(np.asarray(self.query(xs), np.float32).reshape(-1) - np.float32(self.threshold))
        self.queries += len(xs)
        self.calls += 1
        return torch.stack([torch.zeros_like(z), z], dim=1).to(x.device)


class _CountingSquare(torchattacks.Square):
    """torchattacks.Square keeping its own per-image query counts (``perturb`` drops them)."""

    used: torch.Tensor | None = None

    def attack_single_run(self, x, y):
        n, adv = super().attack_single_run(x, y)
        self.used = n
        return n, adv


def square(query: QueryFn | nn.Module, x: torch.Tensor, *, threshold: float = 0.0, eps: float = SQUARE_EPS,
           n_queries: int = SQUARE_QUERIES, seed: int = 0, p_init: float = 0.8) -> dict[str, Any]:  # fmt: skip
    """L-inf Square attack on FAKE images (label 1), pushing each logit to ``threshold`` or below.

    ``query`` is a query function (wrapped in :class:`QueryModule`) or a two-class torch model
    ([N,2] logits, class 1 = FAKE), e.g. the reference the function is matched against. Images the
    model already calls real are returned unchanged (no query beyond the first). torchattacks seeds
    torch's global generator with ``seed``; the caller's generator state is restored afterwards.

    x float32 [N,3,S,S] in [0,1]. Returns {"x": x_adv float32 [N,3,S,S] (``|x_adv - x| <= eps``),
    "success": bool [N] (called real after the attack, by a fresh query), "queries": int [N] (queries
    the attack spent on each image, at most ``n_queries``: its start plus one per iteration while
    not yet fooled, as counted by Square itself), "queries_total": images sent to the model, the
    checks before and after included, "seconds"}. Images the attack does not fool come back
    unchanged (torchattacks keeps only successful perturbations).
    """
    model = query if isinstance(query, nn.Module) else QueryModule(query, threshold)
    x = x.detach()
    t0 = time.perf_counter()
    with torch.no_grad():
        fake = model(x).argmax(1) == 1
    x_adv, queries = x.clone(), np.ones(len(x), np.int64)
    idx = fake.nonzero().flatten()
    if len(idx) and n_queries > 1:
        # torchattacks' n_queries counts the iterations after its first query of the starting point.
        atk = _CountingSquare(model, norm="Linf", eps=eps, n_queries=n_queries - 1, n_restarts=1, p_init=p_init,
                              loss="margin", seed=seed)  # fmt: skip
        with torch.random.fork_rng(devices=[]):
            x_adv[idx] = atk(x[idx], torch.ones(len(idx), dtype=torch.long))
        queries[idx.numpy()] = atk.used.long().numpy()
    with torch.no_grad():
        success = (model(x_adv).argmax(1) == 0).numpy()
    return {"x": x_adv, "success": success, "queries": queries,
            "queries_total": getattr(model, "queries", None), "seconds": time.perf_counter() - t0}  # fmt: skip


def hop_skip_jump(query: QueryFn, x0: np.ndarray, starts: np.ndarray, *, budget: int, eps: float,
                  rng: np.random.Generator) -> dict[str, Any]:  # fmt: skip
    """Decision-based L-inf attack (HopSkipJump, Chen et al. 2020, compact) on one image.

    ``query(x)`` returns logits relative to the calibrated threshold (adversarial: <= 0);
    only the decision is used. x0 float32 [3,S,S]; starts float32 [K,3,S,S] candidate starting
    points (clean reals). Stops at ``budget`` queries. Returns the adversarial image found,
    its L2 and L-inf distances, queries used, and whether L-inf <= ``eps``.
    """
    used = 0
    d = x0.size

    def adv(xs: np.ndarray) -> np.ndarray:
        nonlocal used
        used += len(xs)
        return query(np.ascontiguousarray(xs, dtype=np.float32)) <= 0

    def project(x_a: np.ndarray, r: float) -> np.ndarray:  # L-inf ball of radius r around x0
        return np.clip(x_a, x0 - r, x0 + r)

    def boundary(x_a: np.ndarray, tol: float) -> np.ndarray:
        lo, hi = 0.0, float(np.abs(x_a - x0).max())
        while hi - lo > tol and used < budget:
            mid = (lo + hi) / 2
            if adv(project(x_a, mid)[None])[0]:
                hi = mid
            else:
                lo = mid
        return project(x_a, hi)

    flags = adv(starts)
    if not flags.any():
        return {
            "found": False,
            "queries": used,
            "linf": float("inf"),
            "l2": float("inf"),
            "success": False,
            "x": x0,
        }
    cands = starts[flags]
    x = cands[np.argmin(np.abs(cands - x0).reshape(len(cands), -1).max(axis=1))]
    tol = 1e-3
    x = boundary(x, tol)
    t = 0
    while used < budget:
        t += 1
        dist = float(np.abs(x - x0).max())
        n_eval = int(min(100 * math.sqrt(t), 200, budget - used))
        if n_eval < 4:
            break
        delta = max(1e-3, 0.05 * dist)
        u = rng.normal(size=(n_eval, *x0.shape)).astype(np.float32)
        u /= np.linalg.norm(u.reshape(n_eval, -1), axis=1).reshape(-1, 1, 1, 1) / math.sqrt(
            d
        )  # unit L-inf-ish scale
        u = np.clip(u, -1, 1)
        probes = np.clip(x[None] + delta * u, 0, 1)
        f = np.where(adv(probes), 1.0, -1.0)
        f = f - f.mean() if 0 < (f > 0).mean() < 1 else f
        grad = (f.reshape(-1, 1, 1, 1) * u).mean(axis=0)
        direction = np.sign(grad)
        step = dist / math.sqrt(t)
        moved = None
        while used < budget and step > tol / 4:
            cand = np.clip(x + step * direction, 0, 1)
            if adv(cand[None])[0]:
                moved = cand
                break
            step /= 2
        if moved is None:
            continue
        x_new = boundary(moved, tol)
        if np.abs(x_new - x0).max() < dist:
            x = x_new
    linf = float(np.abs(x - x0).max())
    return {"found": True, "queries": used, "linf": linf, "l2": float(np.linalg.norm(x - x0)),
            "success": bool(linf <= eps + 1e-6), "x": x}  # fmt: skip
