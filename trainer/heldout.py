"""Metrics of a freshly trained model on the held-out test split (report/metrics.json, the manifest)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from forensics.scoring import MahalanobisScorer
from trainer import attacks
from trainer.data import CropSet
from trainer.metrics import log_loss, logit, predict, roc_auc, sigmoid, video_scores
from trainer.models import Discriminator, LogitsOnly
from trainer.recipe import EPS_REPORT, TrainConfig


def heldout_metrics(model: Discriminator, x: torch.Tensor, y: np.ndarray, crops: CropSet, frame_thr: float,
                    video_thr: float | None, scorer: MahalanobisScorer | None, cfg: TrainConfig) -> dict[str, Any]:  # fmt: skip
    """Clean frame/video AUC, log loss and accuracy at the calibrated thresholds; PGD success at each radius of
    EPS_REPORT against the correctly detected fakes; the scorer's detection rate on PGD at ``cfg.eval_eps``."""
    logits, _ = predict(model, x)
    probs = sigmoid(logits)
    vp, vl = video_scores(probs, crops.video, crops.labels)
    out: dict[str, Any] = {
        "clean_frame_auc": roc_auc(probs, y),
        "clean_video_auc": roc_auc(vp, vl),
        "log_loss": log_loss(probs, y),
        "frame_accuracy": float(((probs > frame_thr) == (y == 1)).mean()),
        "frames": int(len(y)),
        "videos": int(len(vl)),
    }
    if video_thr is not None:
        out["video_accuracy"] = float(((vp > video_thr) == (vl == 1)).mean())
    fakes = np.where((y == 1) & (probs > frame_thr))[0]
    out["pgd"] = {}
    for eps in EPS_REPORT:
        if not len(fakes):
            break
        xa = attacks.pgd(LogitsOnly(model), x[fakes], torch.ones(len(fakes)), eps, steps=cfg.eval_pgd_steps,
                         generator=torch.Generator().manual_seed(cfg.seed))  # fmt: skip
        la, fa = predict(model, xa)
        fooled = la <= logit(frame_thr)
        out["pgd"][f"{round(eps * 255)}/255"] = {"success_rate": float(fooled.mean()), "attacked": int(len(fakes))}
        if scorer is not None and abs(eps - cfg.eval_eps) < 1e-9:
            s = scorer.score(fa)
            out["anomaly_on_pgd"] = {
                "eps": f"{round(eps * 255)}/255",
                "detection_rate_all": float((s > scorer.threshold).mean()),
                "detection_rate_fooling": float((s[fooled] > scorer.threshold).mean()) if fooled.any() else None,
                "fooling_examples": int(fooled.sum()),
            }
    return out
