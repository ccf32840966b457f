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
- serving ms per face: the ONNX model alone and ``LoadedModel.score`` (model + the defence's extra
  passes, what the worker runs), one ORT thread, batch 32, with the first row's model as the in-run
  reference (``onnx_ms_ratio``); training time from the version's report.

A row may also be a run's ``checkpoint.pt`` (a run stopped early): it is scored with thresholds
calibrated on that run's validation split; it has no anomaly detector (fit only at a run's end).

Cross-dataset: ``--test-data PART...`` scores on all the videos of those parts instead (those sharing an
original with a ``--data`` part left out), as ``forensics train --test-data`` holds them out.

    .venv/bin/python bench/realvideo.py --data /work/realdata --cache DIR [--crop-size 256] MODELS/V1 RUN/checkpoint.pt ...
    .venv/bin/python bench/realvideo.py MODELS/V --cache DIR --data FFPP_PART... --test-data CELEBDF_PART...
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
from trainer.data import CropCache, CropConfig, held_out_test, read_dataset, split_by_group


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else None


def decision_row(prob: np.ndarray, crops, video_thr: float) -> dict:
    """AUCs, video log loss, accuracy and REAL-called-REAL at ``video_thr`` for crop probabilities float [N]."""
    y = crops.labels
    vids = np.unique(crops.video)
    vprob = np.array([prob[crops.video == v].mean() for v in vids])
    vlab = np.array([y[crops.video == v][0] for v in vids])
    called_fake = vprob > video_thr
    p = np.clip(vprob, 1e-7, 1 - 1e-7)
    return {
        "test_videos": {"real": int((vlab == 0).sum()), "fake": int((vlab == 1).sum())},
        "test_crops": len(y),
        "frame_auc": auc(prob, y),
        "video_auc": auc(vprob, vlab),
        "video_log_loss": float(-np.mean(vlab * np.log(p) + (1 - vlab) * np.log(1 - p))),
        "video_threshold": float(video_thr),
        "video_accuracy": float((called_fake == (vlab == 1)).mean()),
        "real_called_real": float((~called_fake[vlab == 0]).mean()),
        "fake_called_fake": float(called_fake[vlab == 1].mean()),
    }


def pgd_row(D, crops, prob: np.ndarray, frame_thr: float, *, pgd_max: int, seed: int) -> dict:
    """White-box PGD-10 at 4/255 on a fixed random subset of the correctly detected fake crops."""
    import torch

    from trainer import attacks
    from trainer.models import LogitsOnly

    hit = np.where((crops.labels == 1) & (prob > frame_thr))[0]
    hit = np.sort(np.random.default_rng(seed).permutation(hit)[:pgd_max])
    if not len(hit):
        return {"pgd10_4_success": None, "pgd_attacked": 0}
    x = torch.from_numpy(crops.images[hit]).permute(0, 3, 1, 2).float() / 255
    xa = attacks.pgd(LogitsOnly(D), x, torch.ones(len(hit)), 4 / 255, steps=10, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        la = D.eval()(xa)[0].numpy()
    return {"pgd10_4_success": float((la <= math.log(frame_thr / (1 - frame_thr))).mean()), "pgd_attacked": len(hit)}


def ms_per_face(fn, images: np.ndarray, seconds: float = 3.0) -> float:
    """Wall milliseconds per face of ``fn(images)`` (a batch of 32), after one warm-up call."""
    batch = images[:32] if len(images) >= 32 else np.resize(images, (32, *images.shape[1:]))
    fn(batch)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        fn(batch)
        n += len(batch)
    return 1000 * (time.perf_counter() - t0) / n


def score_version(path: Path, cache: CropCache, test_videos, *, pgd_max: int, seed: int) -> dict:
    """A registered version (``MODELS/VERSION``), served as the detect worker serves it."""
    from trainer.models import load_discriminator

    model = load_model(Registry(path.parent), path.name, intra_op_threads=1)
    art = model.artifact
    crops = cache.load(test_videos, size=model.size)
    scores = [model.score(crops.images[i : i + 64]) for i in range(0, len(crops), 64)]
    prob = np.concatenate([s.fake_prob for s in scores])
    flagged = np.concatenate([s.anomalous for s in scores])
    vids = np.unique(crops.video)
    vflag = np.array([flagged[crops.video == v].mean() for v in vids])
    vlab = np.array([crops.labels[crops.video == v][0] for v in vids])
    row = {"row": str(path), "trained_on": art.manifest.get("provenance"), "input_size": model.size,
           **decision_row(prob, crops, model.video_threshold),
           "clean_real_anomaly_crops": float(flagged[crops.labels == 0].mean()),
           "clean_real_anomaly_videos": float((vflag[vlab == 0] > DetectSettings().anomaly_rate).mean()),
           "anomaly_fpr_target": art.manifest.get("thresholds", {}).get("anomaly_fpr")}  # fmt: skip
    D = load_discriminator(art.path / art.manifest.get("torch_weights", "discriminator.pt"))
    row.update(pgd_row(D, crops, prob, model.frame_threshold, pgd_max=pgd_max, seed=seed))
    row["onnx_ms_per_face"] = ms_per_face(model.net.run, crops.images)
    row["worker_ms_per_face"] = ms_per_face(model.score, crops.images)  # model + the defence's extra passes
    report = art.path / "report" / "metrics.json"
    if report.exists():
        timings = json.loads(report.read_text()).get("timings", {})
        row["train_s"], row["total_s"] = timings.get("train_s"), timings.get("total_s")
    return row


def score_checkpoint(path: Path, cache_root: Path, test_videos, *, pgd_max: int, seed: int) -> dict:
    """A run's last checkpoint (``RUN/checkpoint.pt``: a run stopped before its end), thresholds calibrated
    on that run's own validation split as the trainer would; no anomaly detector (fit only at the end)."""
    import dataclasses
    import tempfile

    import torch

    from forensics.runtime import OnnxDiscriminator
    from trainer.calibration import decision_thresholds
    from trainer.data import as_float_tensor
    from trainer.export import export_discriminator
    from trainer.metrics import predict, sigmoid
    from trainer.models import build_detector
    from trainer.recipe import TrainConfig
    from trainer.sources import load_run_data

    state = torch.load(path, map_location="cpu", weights_only=True)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in state["config"].items() if k in fields})
    D = build_detector(cfg.arch, cfg.image_size, cfg.width)
    D.load_state_dict(state["D"])
    D.eval()
    cache = CropCache(cache_root, CropConfig(size=cfg.crop_size or cfg.image_size, frames_per_video=cfg.frames_per_video))
    val = load_run_data(cfg, cache, build=False).crops["val"]
    frame_thr, video_thr = decision_thresholds(D, val, as_float_tensor(val.images))
    crops = cache.load(test_videos, size=cfg.image_size)
    prob = sigmoid(predict(D, as_float_tensor(crops.images))[0])
    row = {"row": str(path), "epochs_done": int(state["epoch"]), "config": {k: state["config"][k] for k in
           ("arch", "fakes", "image_size", "train_frames", "gan_epochs", "adv_epochs", "augment")},
           "input_size": cfg.image_size, **decision_row(prob, crops, video_thr),
           "train_s": float(sum(h.get("train_s", 0) for h in state["history"]))}  # fmt: skip
    row.update(pgd_row(D, crops, prob, frame_thr, pgd_max=pgd_max, seed=seed))
    with tempfile.TemporaryDirectory() as tmp:
        export_discriminator(D, Path(tmp) / "model.onnx", as_float_tensor(crops.images[:8]))
        net = OnnxDiscriminator(Path(tmp) / "model.onnx", intra_op_threads=1)
        row["onnx_ms_per_face"] = ms_per_face(net.run, crops.images)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rows", nargs="+", type=Path, help="MODELS/VERSION directories or RUN/checkpoint.pt files")
    ap.add_argument("--data", required=True, action="append", type=Path, help="parts the versions were trained on")
    ap.add_argument("--test-data", nargs="+", type=Path, metavar="PART", help="score on all of these parts instead")
    ap.add_argument("--cache", required=True, type=Path)
    ap.add_argument("--crop-size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--val-share", type=float, default=0.15)
    ap.add_argument("--test-share", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pgd-max", type=int, default=64, help="correctly detected fake crops attacked per version")
    args = ap.parse_args()
    videos = read_dataset(args.data)
    if args.test_data:
        test, _dropped = held_out_test(args.test_data, videos)
    else:
        test = split_by_group(videos, val=args.val_share, test=args.test_share, seed=args.seed)["test"]
    cache = CropCache(args.cache, CropConfig(size=args.crop_size, frames_per_video=args.frames))
    cache.build(test, progress=False)
    rows = [score_checkpoint(p, args.cache, test, pgd_max=args.pgd_max, seed=args.seed) if p.suffix == ".pt"
            else score_version(p, cache, test, pgd_max=args.pgd_max, seed=args.seed) for p in args.rows]  # fmt: skip
    ref = rows[0]["onnx_ms_per_face"]  # the in-run reference: the first row's model
    for row in rows:
        row["onnx_ms_ratio"] = row["onnx_ms_per_face"] / ref
    print(json.dumps({"test_videos": len(test), "skipped": cache.skipped(test), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
