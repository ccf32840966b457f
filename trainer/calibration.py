"""Calibration after training, on the train and validation splits only (never the test split).

- decision thresholds: the frame and video fake-probability thresholds with the best balanced
  accuracy on validation crops / videos;
- the Mahalanobis scorer: class-conditional Gaussians on clean train features, then per-layer
  weights fit on validation data (clean negatives against generic "not a clean crop" positives and
  FGSM examples), and an anomaly threshold at ``fpr`` of clean validation crops;
- anomaly thresholds that hold on new videos (issue 17). The crops of one video are correlated (one
  face, one scene, one encoder), so what generalizes is the number of VIDEOS, not crops: a crop
  threshold is the ``1 - fpr`` quantile with every validation video weighted equally
  (:func:`video_threshold`), a track threshold is the split-conformal rank over per-video mean scores
  (:func:`track_threshold`), the scores are out-of-fold (:func:`out_of_fold_scores`: the weights that
  score a video never saw it), and a video-block bootstrap (:func:`bootstrap_fpr`) gives the spread of
  the false-positive rate that the threshold will have on new videos.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from forensics.scoring import MahalanobisScorer, fit_layer_weights, fit_mahalanobis
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
                      *, seed: int, fpr: float, adv_video: np.ndarray | None = None) -> tuple[MahalanobisScorer, dict]:  # fmt: skip
    """(the Mahalanobis scorer, its calibration record) with layer weights and threshold fit on validation data.

    val_x: float32 [N,3,S,S] validation crops (clean negatives); val_adv: adversarial validation
    crops (positives, with the generic positives of :func:`trainer.ood.scorer_fit_positives`) made
    from the validation crops of videos ``adv_video`` [M] (None: unknown, never left out of a fold).
    The threshold is :func:`calibrate_videos` of out-of-fold clean scores."""
    _, feats_val = predict(model, val_x)
    scorer = fit_scorer(model, train, seed=seed)
    negatives = scorer.layer_scores(feats_val)
    pos_imgs = scorer_fit_positives(val.images, seed=seed + 1)
    _, feats_pos = predict(model, as_float_tensor(pos_imgs))
    _, feats_adv = predict(model, val_adv)
    positives = np.concatenate([scorer.layer_scores(feats_pos), scorer.layer_scores(feats_adv)])
    weights, bias = fit_layer_weights(negatives, positives)
    scorer = scorer.with_layer_weights(weights, bias)
    adv_video = np.full(len(val_adv), -1) if adv_video is None else np.asarray(adv_video)
    pos_video = np.concatenate([generic_positive_videos(val.video), adv_video])
    oof = out_of_fold_scores(negatives, val.video, positives, pos_video, negatives, val.video, seed=seed)
    crop, _, record = calibrate_videos(oof, val.video, fpr, seed=seed)
    return scorer.with_threshold(crop, fpr=fpr), record


def generic_positive_videos(video: np.ndarray) -> np.ndarray:
    """Video ids [N] of :func:`trainer.ood.scorer_fit_positives`'s rows: -1 for the uniform-noise half,
    the source crop's video for the tile-shuffled half."""
    n = len(video)
    return np.concatenate([np.full(n // 2, -1), np.asarray(video)[: n - n // 2]])


def calibrate_videos(clean: np.ndarray, video: np.ndarray, fpr: float, *, seed: int = 0) -> tuple[float, float, dict]:
    """(crop threshold, track threshold, record) from clean out-of-fold crop scores [N] of videos [N].

    The record (for the report, the manifest and ``defence.npz``) holds the method, the numbers of
    videos and crops and the video-block bootstrap of the rate on new videos (:func:`bootstrap_fpr`)."""
    means = np.array([clean[video == v].mean() for v in np.unique(video)])
    record = {"method": "video-weighted quantile (crops), split-conformal over per-video means (tracks), "
                        "out-of-fold scores, video-block bootstrap",
              "fpr_target": fpr, "crop": bootstrap_fpr(clean, video, fpr, seed=seed),
              "track": bootstrap_fpr(clean, video, fpr, tracks=True, seed=seed)}  # fmt: skip
    return video_threshold(clean, video, fpr), track_threshold(means, fpr), record


# ---- thresholds that hold on new videos ----------------------------------------------------------


def _video_weights(video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inverse index of each crop's video [N], per-crop weight [N] summing to 1, each video 1/V)."""
    _, inv, counts = np.unique(np.asarray(video), return_inverse=True, return_counts=True)
    return inv, 1.0 / (len(counts) * counts[inv])


def video_threshold(scores: np.ndarray, video: np.ndarray, fpr: float) -> float:
    """Crop-score threshold that flags a share ``fpr`` of clean crops, every video weighted equally.

    scores float [N] clean crop scores, video [N] their video ids. Returns the smallest observed
    score t with (mean over videos of the share of the video's crops above t) <= fpr: a video with
    many crops counts no more than one with few, since new videos, not new crops, are what vary."""
    s = np.asarray(scores, np.float64).ravel()
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    if s.size == 0 or not np.all(np.isfinite(s)) or len(video) != s.size:
        raise ValueError("need finite scores and one video id per score")
    _, w = _video_weights(video)
    order = np.argsort(s, kind="stable")
    above = 1.0 - np.cumsum(w[order])  # weight strictly above order[i] (ties aside)
    return float(s[order][np.argmax(above <= fpr + 1e-12)])


def track_threshold(track_scores: np.ndarray, fpr: float) -> float:
    """Split-conformal threshold over V clean per-video (track) scores: the ceil((V+1)(1-fpr))-th smallest,
    so a new clean video is above it with probability <= fpr. With too few videos for that rank
    (V < 1/fpr - 1) it is the largest score (the rate on new videos is then up to 1/(V+1))."""
    s = np.sort(np.asarray(track_scores, np.float64).ravel())
    if s.size == 0 or not np.all(np.isfinite(s)):
        raise ValueError("need at least one finite track score")
    k = math.ceil((s.size + 1) * (1 - fpr))
    return float(s[min(k, s.size) - 1])


def exceedance(scores: np.ndarray, video: np.ndarray, threshold: float) -> float:
    """Video-weighted share of crops above ``threshold`` (the crop FPR over videos)."""
    _, w = _video_weights(video)
    return float(w @ (np.asarray(scores, np.float64) > threshold))


def bootstrap_fpr(scores: np.ndarray, video: np.ndarray, fpr: float, *, tracks: bool = False, reps: int = 200,
                  seed: int = 0) -> dict:  # fmt: skip
    """The spread of the false-positive rate a threshold calibrated on these videos has on new ones.

    Video-block bootstrap: resample the V validation videos with replacement (all crops of a video
    together), calibrate on the resample (:func:`video_threshold`, or :func:`track_threshold` over
    per-video means with ``tracks``), and measure that threshold's rate on the original sample.
    Returns {videos, crops, fpr_target, mean, sd, p05, p95} (rates in [0, 1])."""
    s = np.asarray(scores, np.float64)
    inv, _ = _video_weights(video)
    n_vid = int(inv.max()) + 1
    members = [np.flatnonzero(inv == v) for v in range(n_vid)]
    means = np.array([s[m].mean() for m in members])
    rng = np.random.default_rng(seed)
    rates = []
    for _ in range(reps):
        pick = rng.integers(0, n_vid, n_vid)
        if tracks:
            rates.append(float((means > track_threshold(means[pick], fpr)).mean()))
        else:
            idx = np.concatenate([members[v] for v in pick])
            vid = np.concatenate([np.full(len(members[v]), i) for i, v in enumerate(pick)])
            rates.append(exceedance(s, inv, video_threshold(s[idx], vid, fpr)))
    r = np.array(rates)
    return {"videos": n_vid, "crops": int(s.size), "fpr_target": fpr, "mean": float(r.mean()), "sd": float(r.std()),
            "p05": float(np.quantile(r, 0.05)), "p95": float(np.quantile(r, 0.95))}  # fmt: skip


def out_of_fold_scores(neg: np.ndarray, neg_video: np.ndarray, pos: np.ndarray, pos_video: np.ndarray,
                       target: np.ndarray, target_video: np.ndarray, *, folds: int = 5,
                       seed: int = 0) -> np.ndarray:  # fmt: skip
    """Scores float64 [M] of ``target`` rows [M, F] from logistic weights (:func:`fit_layer_weights`) fit
    without their video: validation videos go to ``folds`` folds; each fold is scored by weights fit on
    the negatives [N0, F] and positives [N1, F] of the other folds (a ``pos_video`` of -1: no video,
    always fit). Thresholds on in-sample scores are optimistic (the weights saw those crops)."""
    vids = np.unique(np.asarray(target_video))
    fold_of = dict(zip(vids[np.random.default_rng(seed).permutation(len(vids))], np.arange(len(vids)) % folds))

    def fold(v):
        return np.array([fold_of.get(x, -1) for x in np.asarray(v)])

    fn, fp, ft = fold(neg_video), fold(pos_video), fold(target_video)
    out = np.empty(len(target))
    for k in range(min(folds, len(vids))):
        w, b = fit_layer_weights(neg[fn != k], pos[fp != k])
        out[ft == k] = b + target[ft == k] @ w
    return out
