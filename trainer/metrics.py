"""Shared by training, evaluation and defence fitting: metrics on scores, batched torch inference,
and JSON-safe conversion of results.

Scores and labels are numpy arrays of one entry per crop (or per video); labels are 1 for FAKE.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from forensics.probability import logit, sigmoid

__all__ = ["balanced_threshold", "jsonable", "log_loss", "logit", "predict", "roc_auc", "run_batched", "sigmoid",
           "video_scores"]  # fmt: skip


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy (natural log) of fake probabilities, clipped to [1e-7, 1 - 1e-7]."""
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def balanced_threshold(probs: np.ndarray, labels: np.ndarray) -> float:
    """The probability threshold with the best balanced accuracy (Youden's J) on these labels."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(labels, probs)
    j = tpr - fpr
    best = int(np.argmax(j))
    t = float(thr[best])
    return min(max(t, 1e-6), 1 - 1e-6)


def video_scores(probs: np.ndarray, video: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-video mean fake probability and label (the aggregation the detect worker uses)."""
    ids = np.unique(video)
    return (
        np.array([probs[video == i].mean() for i in ids]),
        np.array([labels[video == i][0] for i in ids]),
    )


@torch.no_grad()
def run_batched(model: nn.Module, x, batch: int = 256,
                prepare: Callable[[Any], torch.Tensor] | None = None) -> list[torch.Tensor]:  # fmt: skip
    """``model`` in eval mode over ``x`` in batches; its outputs (a tensor or nested tuples of tensors)
    flattened in order and concatenated over batches. ``prepare`` maps a slice of ``x`` to the model's
    input (e.g. uint8 crops -> float tensor). The model's training flag is restored afterwards."""
    was = model.training
    model.eval()
    parts: list[list[torch.Tensor]] = []
    try:
        for i in range(0, len(x), batch):
            chunk = x[i : i + batch]
            parts.append(_flatten(model(prepare(chunk) if prepare else chunk)))
    finally:
        model.train(was)
    return [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))] if parts else []


def _flatten(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _flatten(o)]


def predict(model: nn.Module, x: torch.Tensor, batch: int = 256) -> tuple[np.ndarray, list[np.ndarray]]:
    """A (logits, features) model such as trainer.models.Discriminator on float32 [N,3,S,S] in [0,1]:
    logits float64 [N] and per-layer features float64 [N, C_l], computed in eval mode."""
    out = run_batched(model, x, batch)
    if not out:
        return np.zeros(0), []
    return out[0].double().numpy(), [f.double().numpy() for f in out[1:]]


def jsonable(obj: Any) -> Any:
    """Nested results -> plain JSON types: numpy scalars to Python, NaN/inf to None, paths to str."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj
