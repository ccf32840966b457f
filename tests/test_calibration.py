"""Anomaly thresholds that hold on new videos (issue 17), on generated per-video correlated scores.

Scores are drawn as a video random effect plus crop noise, u_v + e_vi with u ~ N(0, 1), e ~ N(0, 1)
and 3..30 crops per video, so the rate a threshold t has on new videos is known exactly,
P(N(0, 2) > t), and no held-out sampling noise enters the comparison. Tolerances come from the
spread measured here over repeated calibration sets, not from guesses.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from forensics.scoring import calibrate_threshold, fit_layer_weights
from trainer.calibration import (
    bootstrap_fpr,
    calibrate_videos,
    exceedance,
    out_of_fold_scores,
    track_threshold,
    video_threshold,
)

FPR = 0.05


def draw(rng, videos: int, counts=(3, 31)):
    """(scores [N], video ids [N], random effects [V], crops per video [V])."""
    n = rng.integers(*counts, videos)
    u = rng.normal(0, 1, videos)
    vid = np.repeat(np.arange(videos), n)
    return u[vid] + rng.normal(0, 1, vid.size), vid, u, n


def rate_on_new_videos(t: float) -> float:
    return 0.5 * math.erfc(t / 2)  # P(N(0, 2) > t)


@pytest.fixture(scope="module")
def repeated():
    """40 calibrations on 200 fresh videos each: the true rate of each threshold and the bootstrap spread of 8."""
    rng = np.random.default_rng(1)
    rates, boot = [], []
    for r in range(40):
        s, v, _, _ = draw(rng, 200)
        rates.append(rate_on_new_videos(video_threshold(s, v, FPR)))
        if r < 8:
            boot.append(bootstrap_fpr(s, v, FPR, reps=200, seed=r))
    return np.array(rates), boot


def test_video_threshold_lands_on_the_target_rate_on_new_videos(repeated):
    rates, _ = repeated
    sd = rates.std(ddof=1)
    # The bias (a few tenths of a point: the tail rate is convex in the threshold) is below
    # the measured error of one calibration...
    assert abs(rates.mean() - FPR) <= sd, (rates.mean(), sd)
    # ...and, with 200 validation videos, 90% of single calibrations within the 2 points.
    lo, hi = np.quantile(rates, [0.05, 0.95])
    assert FPR - 0.02 <= lo and hi <= FPR + 0.02, (lo, hi)


def test_video_block_bootstrap_predicts_the_spread_over_new_calibration_sets(repeated):
    rates, boot = repeated
    sd = rates.std(ddof=1)
    boot_sd = np.array([b["sd"] for b in boot])
    # Standard errors of both spread estimates: sd / sqrt(2 (R - 1)) for 40 sets, the spread of 8 bootstraps.
    tol = 3 * math.hypot(sd / math.sqrt(2 * (len(rates) - 1)), boot_sd.std(ddof=1) / math.sqrt(len(boot_sd)))
    assert abs(boot_sd.mean() - sd) <= tol, (boot_sd.mean(), sd, tol)
    # Correlated crops: the spread is far wider than the crop-level binomial error the crop count suggests.
    crops = np.mean([b["crops"] for b in boot])
    assert boot_sd.mean() > 2 * math.sqrt(FPR * (1 - FPR) / crops)
    assert all(b["videos"] == 200 and b["p05"] <= b["mean"] <= b["p95"] for b in boot)


def test_videos_with_many_crops_do_not_outweigh_the_rest():
    # Long videos happen to score low: a pooled crop quantile follows them, the video-weighted one does not.
    rng = np.random.default_rng(2)
    pooled, weighted = [], []
    for _ in range(20):
        n = 200
        u = rng.normal(0, 1, n)
        counts = np.where(u < 0, 40, 3)
        vid = np.repeat(np.arange(n), counts)
        s = u[vid] + rng.normal(0, 1, vid.size)
        pooled.append(rate_on_new_videos(calibrate_threshold(s, FPR)))
        weighted.append(rate_on_new_videos(video_threshold(s, vid, FPR)))
    pooled, weighted = np.array(pooled), np.array(weighted)
    se = weighted.std(ddof=1) / math.sqrt(len(weighted))
    assert abs(weighted.mean() - FPR) <= 3 * se, weighted.mean()
    assert pooled.mean() - FPR > 6 * se, pooled.mean()


def test_conformal_track_threshold_keeps_new_clean_tracks_under_the_target():
    rng = np.random.default_rng(3)
    rates = []
    for _ in range(60):
        s, v, _, _ = draw(rng, 200)
        means = np.array([s[v == i].mean() for i in range(200)])
        t = track_threshold(means, FPR)
        # A new track of n crops has mean ~ N(0, 1 + 1/n), n uniform on 3..30.
        rates.append(np.mean([0.5 * math.erfc(t / math.sqrt(2 * (1 + 1 / k))) for k in range(3, 31)]))
    rates = np.array(rates)
    assert rates.mean() <= FPR + 3 * rates.std(ddof=1) / math.sqrt(len(rates)), rates.mean()
    # Too few videos for the conformal rank: the largest score.
    assert track_threshold(np.arange(10.0), FPR) == 9.0


def test_out_of_fold_scores_remove_the_optimism_of_weights_fit_on_the_calibration_crops():
    # 40 noise features, 30 validation videos: in-sample logistic scores put clean crops too low.
    rng = np.random.default_rng(4)
    in_rates, oof_rates = [], []
    for _ in range(6):
        def feats(videos, shift):
            v = np.repeat(np.arange(videos), 8)
            return rng.normal(0, 1, (videos, 40))[v] * 0.7 + rng.normal(0, 1, (len(v), 40)) + shift, v

        neg, nv = feats(30, 0.0)
        pos, pv = feats(30, 0.15)
        new, newv = feats(400, 0.0)
        w, b = fit_layer_weights(neg, pos)
        in_thr = video_threshold(b + neg @ w, nv, FPR)
        oof_thr = video_threshold(out_of_fold_scores(neg, nv, pos, pv, neg, nv, seed=0), nv, FPR)
        in_rates.append(exceedance(b + new @ w, newv, in_thr))
        oof_rates.append(exceedance(b + new @ w, newv, oof_thr))
    assert np.mean(np.abs(np.array(oof_rates) - FPR)) < np.mean(np.abs(np.array(in_rates) - FPR)), (in_rates, oof_rates)


def test_calibration_record_carries_method_counts_and_spread():
    s, v, _, _ = draw(np.random.default_rng(5), 50)
    crop, track, record = calibrate_videos(s, v, FPR)
    assert crop == video_threshold(s, v, FPR) and np.isfinite(track)
    assert record["crop"]["videos"] == record["track"]["videos"] == 50 and record["fpr_target"] == FPR
    assert 0 < record["crop"]["sd"] < 0.05 and record["crop"]["p05"] < FPR < record["crop"]["p95"]
