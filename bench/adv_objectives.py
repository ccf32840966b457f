"""Adversarial-training objectives side by side (issue 17): one row per registered version.

Each version is a run of ``forensics train`` (same data, seed and GAN phase; see README, "Choosing the
adversarial objective"). Per row, on the version's own held-out test split (the same split for all,
as the seed and data are the same): clean video and frame AUC, PGD-10 success at 2/255 and 4/255 on
the correctly detected fakes (the trainer's report/metrics.json), FGSM at the same radii on the same
fakes (computed here), the share of clean test fakes and reals called FAKE at the frame threshold (a
model that calls nearly every crop FAKE, or whose detected fakes sit far above its threshold, "resists"
attacks trivially), a threshold-free check (``robust_frame_auc``: frame AUC after PGD-10 at 4/255 pushes
each crop of a seeded subset of ``--robust-n`` REAL and as many FAKE test crops toward the other class),
the shipped defence's clean false-positive rate on the test videos (the trainer's, every video weighted equally)
and, in-sample, on the validation videos its threshold was set on,
PGD-10 at 4/255 on the model's own training crops (the same rule: seeded detected training fakes; a
much lower rate there than on test is robust overfitting, Rice et al. 2020, the gap that more data
closes, Schmidt et al. 2018), and the adversarial phase's training time (budget clock and wall seconds, epochs). A version trained
with ``--adv-epochs 0`` is the standard (non-adversarial) row.

    python bench/adv_objectives.py --data DIR --models MODELS_DIR [--models MODELS_DIR ...] [--robust-n 64]

Prints JSON: ``rows``, one per version.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forensics.registry import Registry
from trainer import attacks
from trainer.data import as_float_tensor, version_recipe
from trainer.evaluate import load_test_split
from trainer.metrics import logit, predict, roc_auc, sigmoid
from trainer.models import LogitsOnly, load_discriminator

RADII = {"2/255": 2 / 255, "4/255": 4 / 255}


def fgsm_success(model, x: torch.Tensor, fakes: np.ndarray, thr: float) -> dict[str, float]:
    """FGSM success (called real at the frame threshold) at each radius on the given test fakes."""
    out = {}
    for name, eps in RADII.items():
        xa = attacks.fgsm(LogitsOnly(model), x[fakes], torch.ones(len(fakes)), eps)
        out[name] = float((predict(model, xa)[0] <= logit(thr)).mean())
    return out


def robust_auc(model, x: torch.Tensor, labels: np.ndarray, n: int, seed: int) -> dict[str, float]:
    """Frame AUC on n REAL + n FAKE test crops (seeded), clean and after PGD-10 at 4/255 toward the other class."""
    rng = np.random.default_rng(seed)
    idx = np.sort(np.concatenate([rng.permutation(np.where(labels == c)[0])[:n] for c in (0, 1)]))
    y = torch.from_numpy(labels[idx]).float()
    xa = attacks.pgd(LogitsOnly(model), x[idx], y, RADII["4/255"], steps=10, generator=torch.Generator().manual_seed(seed))
    return {"clean": roc_auc(predict(model, x[idx])[0], labels[idx]), "pgd10_4/255": roc_auc(predict(model, xa)[0], labels[idx])}


def defence_val_fpr(art, model, data: list[str], config: dict) -> float | None:
    """The shipped defence's clean false-positive rate on the recipe's validation videos, in-sample (its
    threshold was set on out-of-fold scores of these crops; every video weighted equally), for comparison
    with its rate on the test videos."""
    from forensics.defence import Defence
    from forensics.scoring import MahalanobisScorer
    from trainer.data import load_recipe_splits
    from trainer.defence import clean_rates

    if not (art.path / "defence.npz").exists():
        return None
    val = load_recipe_splits(data, config, config["cache_dir"], which=("val",), workers=1)["val"]
    return clean_rates(Defence.load(art.path / "defence.npz"), MahalanobisScorer.load(art.scorer_path), model, val)["crop"]


def detected_fakes(probs: np.ndarray, labels: np.ndarray, thr: float, config: dict) -> np.ndarray:
    """The trainer's rule (trainer/heldout.py): correctly detected fakes, a seeded subset of eval_subset."""
    fakes = np.where((labels == 1) & (probs > thr))[0]
    return np.sort(np.random.default_rng(config.get("seed", 0)).permutation(fakes)[: config.get("eval_subset", 256)])


def pgd_success(model, x: torch.Tensor, labels: np.ndarray, thr: float, config: dict) -> dict[str, float | int]:
    """PGD-10 at 4/255 success (called real at the frame threshold) on the detected fakes of a split."""
    logits = predict(model, x)[0]
    fakes = detected_fakes(sigmoid(logits), labels, thr, config)
    xa = attacks.pgd(LogitsOnly(model), x[fakes], torch.ones(len(fakes)), RADII["4/255"], steps=10,
                     generator=torch.Generator().manual_seed(config.get("seed", 0)))
    fooled = predict(model, xa)[0] <= logit(thr)
    # By clean margin (logit above the threshold's logit), in thirds of the attacked fakes: whether the
    # crops that fall are the barely detected ones or any.
    margin = logits[fakes] - logit(thr)
    edges = np.quantile(margin, [1 / 3, 2 / 3]) if len(fakes) else np.zeros(2)
    third = np.digitize(margin, edges)
    return {"pgd10_4/255": float(fooled.mean()), "attacked": len(fakes),
            "fakes_called_fake": float((sigmoid(logits)[labels == 1] > thr).mean()),
            "by_margin_third": [{"margin_logit": [float(margin[third == k].min()), float(margin[third == k].max())],
                                 "pgd10_4/255": float(fooled[third == k].mean())} for k in range(3) if (third == k).any()]}


def split_gap(model, data: list[str], config: dict, thr: float, test_x: torch.Tensor, test_labels: np.ndarray) -> dict:
    """PGD-10 at 4/255 on the recipe's training split (what the model was fitted on, no augmentation) and on
    the test split, computed the same way here (same attack, seed and subset rule)."""
    from trainer.data import load_recipe_splits

    train = load_recipe_splits(data, config, config["cache_dir"], which=("train",), workers=1)["train"]
    return {"train": pgd_success(model, as_float_tensor(train.images), train.labels, thr, config),
            "test": pgd_success(model, test_x, test_labels, thr, config)}


@dataclass
class VersionOnTest:
    """A models dir's registered version with its recipe's held-out test crops and frame threshold."""

    art: Any
    meta: dict
    config: dict
    test: Any  # trainer.data.CropSet
    x: torch.Tensor
    thr: float
    model: torch.nn.Module


def version_on_test(models_dir: Path, data: list[str]) -> VersionOnTest:
    """Load the version in ``models_dir`` and its test split (same split, seed and crops as the trainer's)."""
    art = Registry(models_dir).load()
    meta, config = version_recipe(art)
    test = load_test_split(data, config, config["cache_dir"], workers=1)
    model = load_discriminator(art.path / "discriminator.pt").eval()
    return VersionOnTest(art, meta, config, test, as_float_tensor(test.images),
                         art.manifest["thresholds"]["frame_prob"], model)


def row_for(models_dir: Path, data: list[str], robust_n: int, train_split: bool = True) -> dict:
    v = version_on_test(models_dir, data)
    art, meta, config, test, x, thr, model = v.art, v.meta, v.config, v.test, v.x, v.thr, v.model
    probs = sigmoid(predict(model, x)[0])
    fakes = detected_fakes(probs, test.labels, thr, config)
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
        "fakes_called_fake": float((probs[test.labels == 1] > thr).mean()),
        "reals_called_fake": float((probs[test.labels == 0] > thr).mean()),
        "robust_frame_auc": robust_auc(model, x, test.labels, robust_n, config.get("seed", 0)) if robust_n else None,
        # the shipped defence's clean false-positive rate on these test videos (target: config anomaly_fpr)
        "defence_clean_fpr_test": meta["test"].get("ood_detection", {}).get("clean_test_fpr"),
        "defence_clean_fpr_val": defence_val_fpr(art, model, data, config),
        "split_gap": split_gap(model, data, config, thr, x, test.labels) if train_split else None,
        "adv_epochs": len(adv_hist),
        "adv_budget_s": sum(h.get("budget_s", h["train_s"]) for h in adv_hist),
        "adv_wall_s": sum(h["train_s"] for h in adv_hist),
        "final_train_eps_255": adv_hist[-1]["train_eps"] * 255 if adv_hist else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--models", action="append", required=True, type=Path, help="a models dir holding one version")
    ap.add_argument("--robust-n", type=int, default=64, help="REAL and FAKE crops each for robust_frame_auc (0: off)")
    ap.add_argument("--no-train-split", action="store_true", help="skip split_gap (PGD on the training split's fakes)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [row_for(d, args.data, args.robust_n, not args.no_train_split) for d in args.models]
    print(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
