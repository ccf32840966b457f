"""Score registered model versions on the same real test videos (the issue-15 table); prints JSON.

Every version is scored on the crops of one test split: the videos of ``--data`` split by group
(original clip) across all part folders with the trainer's shares and seed, so a version trained on
these folders with the same shares and seed never saw them, and a version trained elsewhere (the
synthetic demo model) is scored on exactly the same videos. Crops come from one cache (``--cache``,
``--crop-size``) resized to each version's input size. Columns per version:

- frame and video ROC AUC (video score: mean fake probability of its crops, as the worker does);
- video log loss; accuracy and the share of REAL videos called REAL at the version's calibrated
  video threshold (manifest ``thresholds.video_prob``, set on its own validation videos);
- clean-real anomaly rate: share of REAL test crops the version's anomaly detector (defence.npz,
  as served) flags, and share of REAL videos whose flagged share is above ``detect.anomaly_rate``;
- PGD-10 at 4/255 (white-box, torch weights): share of correctly detected test fake crops pushed
  below the frame threshold;
- serving ms per face: ``LoadedModel.score`` (ONNX model + defence passes), one ORT thread, batch 32,
  with the first version's figure as the in-run reference (``ms_ratio``); training time from the
  version's report.

    .venv/bin/python bench/realvideo.py --models DIR --data /work/realdata --cache DIR [--crop-size 256] V1 V2 ...
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forensics.config import DetectSettings
from forensics.model import load_model
from forensics.registry import Registry
from trainer.data import CropCache, CropConfig, read_dataset, split_by_group


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else None


def score_version(reg: Registry, version: str, cache: CropCache, test_videos, *, pgd_max: int, seed: int) -> dict:
    import torch

    from trainer import attacks
    from trainer.models import LogitsOnly, load_discriminator

    model = load_model(reg, version, intra_op_threads=1)
    art = model.artifact
    crops = cache.load(test_videos, size=model.size)
    scores = [model.score(crops.images[i : i + 64]) for i in range(0, len(crops), 64)]
    prob = np.concatenate([s.fake_prob for s in scores])
    flagged = np.concatenate([s.anomalous for s in scores])
    y = crops.labels
    vids = np.unique(crops.video)
    vprob = np.array([prob[crops.video == v].mean() for v in vids])
    vlab = np.array([y[crops.video == v][0] for v in vids])
    vflag = np.array([flagged[crops.video == v].mean() for v in vids])
    called_fake = vprob > model.video_threshold
    p = np.clip(vprob, 1e-7, 1 - 1e-7)
    row = {
        "version": version,
        "trained_on": art.manifest.get("provenance"),
        "input_size": model.size,
        "test_videos": {"real": int((vlab == 0).sum()), "fake": int((vlab == 1).sum())},
        "test_crops": len(y),
        "frame_auc": auc(prob, y),
        "video_auc": auc(vprob, vlab),
        "video_log_loss": float(-np.mean(vlab * np.log(p) + (1 - vlab) * np.log(1 - p))),
        "video_threshold": model.video_threshold,
        "video_accuracy": float((called_fake == (vlab == 1)).mean()),
        "real_called_real": float((~called_fake[vlab == 0]).mean()),
        "fake_called_fake": float(called_fake[vlab == 1].mean()),
        "clean_real_anomaly_crops": float(flagged[y == 0].mean()),
        "clean_real_anomaly_videos": float((vflag[vlab == 0] > DetectSettings().anomaly_rate).mean()),
        "anomaly_fpr_target": art.manifest.get("thresholds", {}).get("anomaly_fpr"),
    }
    # White-box PGD-10 at 4/255 on correctly detected fake crops (a fixed random subset).
    frame_thr = model.frame_threshold
    hit = np.where((y == 1) & (prob > frame_thr))[0]
    rng = np.random.default_rng(seed)
    hit = np.sort(rng.permutation(hit)[:pgd_max])
    if len(hit):
        D = load_discriminator(art.path / art.manifest.get("torch_weights", "discriminator.pt"))
        x = torch.from_numpy(crops.images[hit]).permute(0, 3, 1, 2).float() / 255
        xa = attacks.pgd(LogitsOnly(D), x, torch.ones(len(hit)), 4 / 255, steps=10,
                         generator=torch.Generator().manual_seed(seed))  # fmt: skip
        with torch.no_grad():
            la = D(xa)[0].numpy()
        row["pgd10_4_success"] = float((la <= math.log(frame_thr / (1 - frame_thr))).mean())
        row["pgd_attacked"] = len(hit)
    else:
        row["pgd10_4_success"], row["pgd_attacked"] = None, 0
    # Serving cost per face: the worker's whole per-crop call.
    batch = crops.images[:32] if len(crops) >= 32 else np.resize(crops.images, (32, *crops.images.shape[1:]))
    model.score(batch)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 3.0:
        model.score(batch)
        n += len(batch)
    row["serve_ms_per_face"] = 1000 * (time.perf_counter() - t0) / n
    report = art.path / "report" / "metrics.json"
    if report.exists():
        timings = json.loads(report.read_text()).get("timings", {})
        row["train_s"] = timings.get("train_s")
        row["total_s"] = timings.get("total_s")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("versions", nargs="+")
    ap.add_argument("--models", required=True, type=Path)
    ap.add_argument("--data", required=True, action="append", type=Path)
    ap.add_argument("--cache", required=True, type=Path)
    ap.add_argument("--crop-size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--val-share", type=float, default=0.15)
    ap.add_argument("--test-share", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pgd-max", type=int, default=64, help="correctly detected fake crops attacked per version")
    args = ap.parse_args()
    videos = read_dataset(args.data)
    test = split_by_group(videos, val=args.val_share, test=args.test_share, seed=args.seed)["test"]
    cache = CropCache(args.cache, CropConfig(size=args.crop_size, frames_per_video=args.frames))
    cache.build(test, progress=False)
    reg = Registry(args.models)
    rows = [score_version(reg, v, cache, test, pgd_max=args.pgd_max, seed=args.seed) for v in args.versions]
    ref = rows[0]["serve_ms_per_face"]
    for row in rows:
        row["ms_ratio"] = row["serve_ms_per_face"] / ref
    print(json.dumps({"test_videos": len(test), "skipped": cache.skipped(test), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
