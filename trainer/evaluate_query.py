"""The query-based attacks of the robustness evaluation, through the deployed model (ONNX Runtime).

- :func:`square_evaluation`: the Square attack (:func:`trainer.attacks_query.square`, 5,000 queries per
  image by default) per frame, on correctly detected test fakes, and per face track, on every crop
  of fake videos the model calls fake; a track is fooled when the video verdict (mean fake
  probability over the video threshold, the worker's rule) flips to REAL. When the version ships a
  second line of defence, its flags on the adversarial crops count too: "fooled and not flagged".
- :func:`hop_skip_jump_evaluation`: the decision-based attack on a few images (L-inf 8/255).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from trainer.attacks_query import SQUARE_EPS, SQUARE_QUERIES, QueryFn, hop_skip_jump, square
from trainer.metrics import logit, sigmoid

# A defence's crop scores: uint8 crops [N,S,S,3] -> float64 [N]; with its crop and track thresholds.
DefenceScore = tuple[Callable[[np.ndarray], np.ndarray], float, float]


def _median(v) -> float:
    return float(np.median(v)) if len(v) else float("nan")


def square_evaluation(query: QueryFn, x: torch.Tensor, video: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                      thresholds: dict, *, frames: np.ndarray, tracks: int, eps: float = SQUARE_EPS,
                      n_queries: int = SQUARE_QUERIES, seed: int = 0, rng: np.random.Generator,
                      defence: DefenceScore | None = None) -> dict[str, Any]:  # fmt: skip
    """Square per frame (the test crops at indices ``frames``, correctly detected fakes) and per track.

    x float32 [N,3,S,S] in [0,1] (all test crops), video/labels [N], probs [N] their clean fake
    probabilities. Per track: up to ``tracks`` fake videos (drawn with ``rng``) whose clean mean
    probability is over the video threshold; every crop of a track is attacked towards the VIDEO
    threshold (a track whose crops all get there is certainly flipped; fewer may already do it).
    ``defence`` (score function, crop threshold, track threshold) flags the adversarial crops
    (rounded to uint8) and tracks (mean crop score).
    """
    from trainer.defence import to_uint8

    z_thr, p_vthr = logit(float(thresholds["frame_prob"])), float(thresholds["video_prob"])
    out: dict[str, Any] = {"eps": eps, "query_budget": n_queries}
    if len(frames):
        r = square(query, x[frames], threshold=z_thr, eps=eps, n_queries=n_queries, seed=seed)
        ok, q = r["success"], r["queries"]
        row = {"attacked": len(frames), "success_rate": float(ok.mean()), "median_queries": _median(q),
               "mean_queries": float(q.mean()), "median_queries_success": _median(q[ok]),
               "queries_total": r["queries_total"], "seconds": r["seconds"],
               "linf_max": float((r["x"] - x[frames]).abs().max()), "index": frames.tolist()}  # fmt: skip
        if defence is not None:
            flagged = defence[0](to_uint8(r["x"])) > defence[1]
            row["detection_rate_fooling"] = float(flagged[ok].mean()) if ok.any() else float("nan")
            row["fooled_and_undetected"] = float((ok & ~flagged).mean())
        out["frame"] = row
    fake_videos = [v for v in np.unique(video) if labels[video == v][0] == 1 and probs[video == v].mean() > p_vthr]
    chosen = sorted(rng.permutation(fake_videos)[:tracks].tolist()) if fake_videos else []
    if chosen:
        order = np.concatenate([np.where(video == v)[0] for v in chosen])
        r = square(query, x[order], threshold=logit(p_vthr), eps=eps, n_queries=n_queries, seed=seed)
        vid = video[order]
        adv_p = sigmoid(np.asarray(query(r["x"].numpy()), np.float64))
        fooled = np.array([adv_p[vid == v].mean() <= p_vthr for v in chosen])
        row = {"attacked": len(chosen), "crops": len(order), "success_rate": float(fooled.mean()),
               "crop_success_rate": float(r["success"].mean()), "median_queries": _median(r["queries"]),
               "queries_total": r["queries_total"], "seconds": r["seconds"], "videos": [int(v) for v in chosen]}  # fmt: skip
        if defence is not None:
            s = defence[0](to_uint8(r["x"]))
            flagged = np.array([s[vid == v].mean() > defence[2] for v in chosen])
            row["detection_rate_fooling"] = float(flagged[fooled].mean()) if fooled.any() else float("nan")
            row["fooled_and_undetected"] = float((fooled & ~flagged).mean())
        out["track"] = row
    return out


def hop_skip_jump_evaluation(query: QueryFn, x: torch.Tensor, labels: np.ndarray, probs: np.ndarray,
                             detected: np.ndarray, xf: torch.Tensor, frame_thr: float, *, images: int,
                             budget: int, rng: np.random.Generator, eps: float = 8 / 255) -> dict[str, Any]:  # fmt: skip
    """HopSkipJump (L-inf, ``budget`` queries each) on ``images`` of the attacked fakes ``xf`` (test indices
    ``detected``), started from clean reals the model calls real."""
    z_thr = logit(frame_thr)
    n = len(detected)
    reals = np.where((labels == 0) & (probs <= frame_thr))[0]
    rows = []
    idx = np.sort(rng.choice(n, min(images, n), replace=False)) if n else np.zeros(0, int)
    starts_all = (
        x[reals[:32]].numpy() if len(reals) else rng.uniform(0, 1, (8, *x.shape[1:])).astype(np.float32)
    )
    qfn = lambda xs: np.asarray(query(xs), np.float64) - z_thr
    for i in idx:
        pick = starts_all[rng.choice(len(starts_all), min(8, len(starts_all)), replace=False)]
        r = hop_skip_jump(qfn, xf[i].numpy(), pick, budget=budget, eps=eps, rng=rng)
        rows.append({k: v for k, v in r.items() if k != "x"} | {"index": int(detected[i])})
    mean = lambda k: float(np.mean([r[k] for r in rows])) if rows else float("nan")
    return {"images": len(rows), "query_budget": budget, "eps": eps, "success_rate": mean("success"),
            "found_rate": mean("found"), "median_linf": _median([r["linf"] for r in rows]),
            "median_l2": _median([r["l2"] for r in rows]), "median_queries": _median([r["queries"] for r in rows]),
            "per_image": rows, "_idx": idx}  # fmt: skip
