"""Calibration after training, on the train and validation splits only (never the test split).

- decision thresholds: the frame and video fake-probability thresholds with the best balanced
  accuracy on validation crops / videos;
- the Mahalanobis scorer: class-conditional Gaussians on clean train features, then per-layer
  weights fit on validation data (clean negatives against generic "not a clean crop" positives and
  FGSM examples), and an anomaly threshold at ``fpr`` of clean validation crops.
"""

from __future__ import annotations

import numpy as np
import torch

from forensics.scoring import MahalanobisScorer, calibrate_threshold, fit_layer_weights, fit_mahalanobis
from trainer.data import CropSet, as_float_tensor
from trainer.metrics import balanced_threshold, predict, sigmoid, video_scores
from trainer.models import Discriminator
from trainer.ood import scorer_fit_positives


def fit_scorer(model: Discriminator, train: CropSet, *, seed: int, limit: int = 2048) -> MahalanobisScorer:
    """Class-conditional Gaussian fit on clean train features (a subsample of ``limit`` crops, for speed)."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.permutation(len(train))[:limit])
    _, feats = predict(model, as_float_tensor(train.images[idx]))
    return fit_mahalanobis(feats, train.labels[idx])


def decision_thresholds(model: Discriminator, val: CropSet, val_x: torch.Tensor) -> tuple[float, float]:
    """(frame, video) fake-probability thresholds with the best balanced accuracy on validation data."""
    probs = sigmoid(predict(model, val_x)[0])
    y = val.labels.astype(np.float64)
    vp, vl = video_scores(probs, val.video, val.labels)
    return balanced_threshold(probs, y), balanced_threshold(vp, vl)


def calibrated_scorer(model: Discriminator, train: CropSet, val: CropSet, val_x: torch.Tensor, val_adv: torch.Tensor,
                      *, seed: int, fpr: float) -> MahalanobisScorer:  # fmt: skip
    """The Mahalanobis scorer with layer weights and threshold fit on validation data.

    val_x: float32 [N,3,S,S] validation crops (clean negatives); val_adv: adversarial validation
    crops (positives, with the generic positives of :func:`trainer.ood.scorer_fit_positives`)."""
    _, feats_val = predict(model, val_x)
    scorer = fit_scorer(model, train, seed=seed)
    negatives = scorer.layer_scores(feats_val)
    pos_imgs = scorer_fit_positives(val.images, seed=seed + 1)
    _, feats_pos = predict(model, as_float_tensor(pos_imgs))
    _, feats_adv = predict(model, val_adv)
    positives = np.concatenate([scorer.layer_scores(feats_pos), scorer.layer_scores(feats_adv)])
    weights, bias = fit_layer_weights(negatives, positives)
    scorer = scorer.with_layer_weights(weights, bias)
    anomaly_thr = calibrate_threshold(scorer.score(feats_val), fpr=fpr)
    return scorer.with_threshold(anomaly_thr, fpr=fpr)
