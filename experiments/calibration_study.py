"""Issue 17: how far the clean false-positive rate of a calibrated anomaly threshold lands from its
target on NEW videos, against the number of validation videos, on generated correlated scores.

Per video a random effect u ~ N(0, 1), per crop noise e ~ N(0, 1), 3..30 crops per video, so the
rate of a threshold t on new videos is known exactly: P(N(0, 2) > t). For each number of validation
videos: 40 calibrations (trainer.calibration.video_threshold, and the pooled crop quantile beside
it), the video-block bootstrap's predicted spread from 8 of them, the rate measured on 600 held-out
videos for those 8, and the conformal track threshold's rate. Prints one JSON line per size.

    python experiments/calibration_study.py [--videos 80 200 400] [--fpr 0.05]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forensics.scoring import calibrate_threshold
from trainer.calibration import bootstrap_fpr, exceedance, track_threshold, video_threshold


def draw(rng, videos: int):
    n = rng.integers(3, 31, videos)
    vid = np.repeat(np.arange(videos), n)
    return rng.normal(0, 1, videos)[vid] + rng.normal(0, 1, vid.size), vid


def rate(t: float, var: float = 2.0) -> float:
    return 0.5 * math.erfc(t / math.sqrt(2 * var))


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--videos", type=int, nargs="*", default=[80, 200, 400])
    p.add_argument("--fpr", type=float, default=0.05)
    p.add_argument("--reps", type=int, default=40)
    args = p.parse_args(argv)
    for n_vid in args.videos:
        rng = np.random.default_rng(1)
        video_w, pooled, boot_sd, held, tracks = [], [], [], [], []
        for r in range(args.reps):
            s, v = draw(rng, n_vid)
            t = video_threshold(s, v, args.fpr)
            video_w.append(rate(t))
            pooled.append(rate(calibrate_threshold(s, args.fpr)))
            if r < 8:
                boot_sd.append(bootstrap_fpr(s, v, args.fpr, seed=r)["sd"])
                held_s, held_v = draw(rng, 600)
                held.append(exceedance(held_s, held_v, t))
            means = np.array([s[v == i].mean() for i in range(n_vid)])
            tt = track_threshold(means, args.fpr)
            tracks.append(float(np.mean([rate(tt, 1 + 1 / k) for k in range(3, 31)])))
        w = np.array(video_w)
        print(json.dumps({"videos": n_vid, "reps": args.reps, "video_weighted": {
            "mean": w.mean(), "sd": w.std(ddof=1), "p05": np.quantile(w, 0.05), "p95": np.quantile(w, 0.95),
            "min": w.min(), "max": w.max()}, "pooled_crop_quantile": {"mean": np.mean(pooled), "sd": np.std(pooled, ddof=1)},
            "bootstrap_sd_mean": np.mean(boot_sd), "held_out_600_videos": {"mean": np.mean(held), "min": min(held), "max": max(held)},
            "track_conformal": {"mean": np.mean(tracks), "sd": np.std(tracks, ddof=1)}}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
