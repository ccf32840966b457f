"""The test suite's short training recipe (tests/conftest.py ``trained``) on synthetic swaps: does it learn
the swap or the scenes? One run per call; prints one JSON line (and appends it to ``--out``).

Generates (once, under ``--work``) a DFDC-format set of ``--videos`` synthetic clips (``trainer.synth``,
difficulty 0, seed 21) and 12 new clips (seeds 500-511, 2 s, half FAKE, as tests/test_detect.py's
samples); trains the fixture's recipe (10 clean + 2 PGD epochs, Haar crops, 64 px) with ``--set``
overrides of :class:`trainer.recipe.TrainConfig`; reports the per-epoch validation AUC, the test split's
video AUC, and on the new clips the mean fake probability of 10 Haar crops each (the served ONNX
model), their AUC, and how many land on the right side of the version's frame threshold.

    .venv/bin/python bench/fixture_recipe.py --videos 128 --seconds 0.8 --set frames_per_video=6 \\
        --set augment=flip --set threads=1 [--set seed=1] [--out fixture_recipe.jsonl]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forensics.model import load_model  # noqa: E402
from forensics.registry import Registry  # noqa: E402
from trainer.data import CropCache, CropConfig, read_dataset  # noqa: E402
from trainer.metrics import roc_auc  # noqa: E402
from trainer.synth import generate_dataset  # noqa: E402
from trainer.synth.dataset import render_sample_clip  # noqa: E402
from trainer.train import TrainConfig, train  # noqa: E402


def new_clips(root: Path) -> Path:
    """12 clips never trained on, in DFDC layout (metadata.json), made once."""
    part = root / "dfdc_train_part_0"
    if not (part / "metadata.json").exists():
        part.mkdir(parents=True, exist_ok=True)
        meta = {}
        for i in range(12):
            fake = i % 2 == 1
            name = f"s{i}_{'fake' if fake else 'real'}.mp4"
            render_sample_clip(part / name, fake=fake, seed=500 + i, seconds=2.0, difficulty=0.0)
            meta[name] = {"label": "FAKE" if fake else "REAL", "split": "train", "original": None}
        (part / "metadata.json").write_text(json.dumps(meta))
    return root


def overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        if key not in {f.name for f in dataclasses.fields(TrainConfig)}:
            raise SystemExit(f"fixture_recipe: error: --set {pair!r}: no TrainConfig field {key!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=1.4)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=JSON", help="a TrainConfig field")
    ap.add_argument("--work", default=".forensics/bench/fixture_recipe")
    ap.add_argument("--out", help="append the JSON line here too")
    args = ap.parse_args()
    sets = overrides(args.set)
    work = Path(args.work)
    data = work / f"data_v{args.videos}_s{args.seconds}"
    if not (data / "done").exists():
        shutil.rmtree(data, ignore_errors=True)
        generate_dataset(data, args.videos, seed=21, seconds=args.seconds, difficulty=0.0)
        (data / "done").write_text("")
    clips = new_clips(work / "new_clips")
    run = work / ("run_" + "_".join(f"{k}-{v}" for k, v in sorted(sets.items())) + f"_v{args.videos}")
    shutil.rmtree(run, ignore_errors=True)
    cfg = TrainConfig(
        data=[str(data)], image_size=64, frames_per_video=10, gan_epochs=10, adv_epochs=2, batch_size=32, lr=1e-3,
        adv_lr=5e-4, eval_subset=64, eval_pgd_steps=5, val_share=0.25, test_share=0.25, progress=False,
        run_dir=str(run / "run"), cache_dir=str(run / "crops"), models_dir=str(run / "models"), crop_detector="haar",
        val_defence_every=5, evaluate=False,
    )  # fmt: skip
    cfg = dataclasses.replace(cfg, **sets)
    t0 = time.monotonic()
    result = train(cfg)
    train_s = time.monotonic() - t0
    metrics = json.loads((run / "models" / result["version"] / "report" / "metrics.json").read_text())
    model = load_model(Registry(run / "models"), result["version"])
    threshold = model.artifact.manifest["thresholds"]["frame_prob"]
    videos = read_dataset([str(clips)])
    cache = CropCache(run / "new_clip_crops", CropConfig(size=64, frames_per_video=10, detector="haar"))
    cache.build(videos, workers=1, progress=False)
    crops = cache.load(videos)
    prob = model.score(crops.images).fake_prob
    per_clip = {crops.videos[v].path.name: float(np.mean(prob[crops.video == v])) for v in np.unique(crops.video)}
    fake = np.array(["fake" in name for name in per_clip])
    score = np.array(list(per_clip.values()))
    test = metrics["test"]
    line = {
        "videos": args.videos, "seconds": args.seconds, "set": sets, "train_s": round(train_s, 1),
        "val_auc_per_epoch": [round(h["clean_auc"], 3) for h in metrics["history"]],
        "test_video_auc": test["adversarially_trained"]["clean_video_auc"],
        "test_video_auc_standard": test["standard"]["clean_video_auc"],
        "frame_threshold": threshold,
        "new_clips": {"auc": roc_auc(score, fake.astype(int)), "right": int(np.sum((score >= threshold) == fake)),
                      "of": len(score), "mean_fake_prob": {k: round(v, 3) for k, v in per_clip.items()}},
    }  # fmt: skip
    text = json.dumps(line)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
