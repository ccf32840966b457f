"""Adversarial-training objectives side by side (issue 17): one row per registered version.

Each version is a run of ``forensics train`` (same data, seed and GAN phase; see README, "Choosing the
adversarial objective"). Per row, on the version's own held-out test split (the same split for all,
as the seed and data are the same): clean video and frame AUC, PGD-10 success at 2/255 and 4/255 on
the correctly detected fakes (the trainer's report/metrics.json), FGSM at the same radii on the same
fakes (computed here), and the adversarial phase's training time (budget clock and wall seconds,
epochs). A version trained with ``--adv-epochs 0`` is the standard (non-adversarial) row.

    python bench/adv_objectives.py --data DIR --models MODELS_DIR [--models MODELS_DIR ...]

Prints JSON: ``rows``, one per version.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from forensics.registry import Registry
from trainer import attacks
from trainer.data import as_float_tensor, version_recipe
from trainer.evaluate import load_test_split
from trainer.metrics import logit, predict, sigmoid
from trainer.models import LogitsOnly, load_discriminator

RADII = {"2/255": 2 / 255, "4/255": 4 / 255}


def fgsm_success(model, x: torch.Tensor, fakes: np.ndarray, thr: float) -> dict[str, float]:
    """FGSM success (called real at the frame threshold) at each radius on the given test fakes."""
    out = {}
    for name, eps in RADII.items():
        xa = attacks.fgsm(LogitsOnly(model), x[fakes], torch.ones(len(fakes)), eps)
        out[name] = float((predict(model, xa)[0] <= logit(thr)).mean())
    return out


def row_for(models_dir: Path, data: list[str]) -> dict:
    art = Registry(models_dir).load()
    meta, config = version_recipe(art)
    test = load_test_split(data, config, config["cache_dir"], workers=1)
    x = as_float_tensor(test.images)
    thr = art.manifest["thresholds"]["frame_prob"]
    model = load_discriminator(art.path / "discriminator.pt").eval()
    probs = sigmoid(predict(model, x)[0])
    # The trainer's rule (trainer/heldout.py): correctly detected fakes, a seeded subset of eval_subset.
    fakes = np.where((test.labels == 1) & (probs > thr))[0]
    fakes = np.sort(np.random.default_rng(config.get("seed", 0)).permutation(fakes)[: config.get("eval_subset", 256)])
    adv_hist = [h for h in meta["history"] if h["phase"] == "adv"]
    res = meta["test"]["adversarially_trained"]
    return {
        "version": art.version,
        "objective": config.get("adv_objective", "pgd") if adv_hist else "none (standard)",
        "clean_video_auc": res["clean_video_auc"],
        "clean_frame_auc": res["clean_frame_auc"],
        "pgd10": {k: res["pgd"][k]["success_rate"] for k in RADII if k in res["pgd"]},
        "fgsm": fgsm_success(model, x, fakes, thr),
        "attacked": len(fakes),
        "adv_epochs": len(adv_hist),
        "adv_budget_s": sum(h.get("budget_s", h["train_s"]) for h in adv_hist),
        "adv_wall_s": sum(h["train_s"] for h in adv_hist),
        "final_train_eps_255": adv_hist[-1]["train_eps"] * 255 if adv_hist else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--models", action="append", required=True, type=Path, help="a models dir holding one version")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(json.dumps({"rows": [row_for(d, args.data) for d in args.models]}, indent=1))


if __name__ == "__main__":
    main()
