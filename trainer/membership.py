"""Membership-inference building blocks shared by the privacy report and the DP study: the
attack's ROC numbers, per-example losses and a torch model's probabilities."""

from __future__ import annotations

import numpy as np
import torch

from trainer.data import as_float_tensor
from trainer.models import Discriminator

_EPS = 1e-7


def auc_tpr(member: np.ndarray, non: np.ndarray, fpr_at: float = 0.01) -> tuple[float, float]:
    """(ROC AUC, TPR at ``fpr_at`` FPR) of scores where higher means "member"."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.r_[np.ones(len(member)), np.zeros(len(non))]
    s = np.r_[member, non].astype(np.float64)
    if len(member) == 0 or len(non) == 0:
        return float("nan"), float("nan")
    fpr, tpr, _ = roc_curve(y, s)
    return float(roc_auc_score(y, s)), float(np.interp(fpr_at, fpr, tpr))


def loss_of(prob: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example cross-entropy of the true label (probabilities clipped to [1e-7, 1-1e-7])."""
    p = np.clip(prob.astype(np.float64), _EPS, 1 - _EPS)
    return -(labels * np.log(p) + (1 - labels) * np.log(1 - p))


@torch.no_grad()
def torch_prob(d: Discriminator, images: np.ndarray) -> np.ndarray:
    """float64 [N] fake probability of uint8 [N,S,S,3] crops."""
    x = as_float_tensor(images)
    return torch.cat([torch.sigmoid(d.logits_only(b)) for b in x.split(256)]).double().numpy()
