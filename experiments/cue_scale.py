"""Issue 17 study: how large are the cues that tell a FAKE crop from a REAL one, next to the attack radius?

An L-infinity attack of radius eps can change every pixel by eps. If the model's evidence for FAKE
sits in signals of that amplitude (camera noise, fine detail a low-resolution swap lost), no
training can make it robust at eps without giving that evidence up. Two measurements on a
registered version's held-out test split (same split, seed and crops as the trainer's):

1. **Random perturbations, no gradient.** The share of the model's detected test fakes (the
   trainer's rule, seeded subset) that it calls REAL after uniform noise in [-eps, eps], after a
   random sign pattern of amplitude eps, and after a Gaussian blur (sigma 0.7 px), each rounded to
   uint8 as the detect worker sees crops; and the share of correctly called test reals it calls FAKE
   after the same. A model whose fakes flip under *random* eps noise reads a noise-scale cue.
2. **The cue itself.** Per crop, the standard deviation (in 1/255 units) of the high-frequency
   residual ``x - GaussianBlur(x, 1 px)`` over the central half of the crop (the inner face a swap
   replaces), REAL against FAKE: class means, the difference, and that statistic's own AUC. A swap
   rendered at a lower resolution without the camera's noise has less of it; a sign pattern of
   amplitude eps adds a residual of about eps.

    python experiments/cue_scale.py --data D --models MODELS_DIR [--models ...] [--eps 4]

Prints JSON, one row per models dir.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, when run as a script

from bench.adv_objectives import detected_fakes, version_on_test
from trainer.metrics import predict, roc_auc, sigmoid


def hf_residual_std(images: np.ndarray) -> np.ndarray:
    """uint8 [N,S,S,3] -> float [N]: std (1/255 units) of x - blur(x, sigma 1) over the central half."""
    out = np.empty(len(images))
    s = images.shape[1]
    lo, hi = s // 4, s - s // 4
    for i, img in enumerate(images.astype(np.float32)):
        res = img - cv2.GaussianBlur(img, (0, 0), 1.0)
        out[i] = res[lo:hi, lo:hi].std()
    return out


def perturbations(x: torch.Tensor, eps: float, seed: int) -> dict[str, torch.Tensor]:
    """Gradient-free perturbations of float crops [N,3,S,S] in [0,1], rounded to uint8 levels."""
    g = torch.Generator().manual_seed(seed)
    uniform = (torch.rand(x.shape, generator=g) * 2 - 1) * eps
    sign = torch.sign(torch.rand(x.shape, generator=g) - 0.5) * eps
    img = (x.permute(0, 2, 3, 1).numpy() * 255).astype(np.float32)
    blurred = np.stack([cv2.GaussianBlur(im, (0, 0), 0.7) for im in img]) / 255
    rows = {"uniform": x + uniform, "sign": x + sign, "blur0.7": torch.from_numpy(blurred).permute(0, 3, 1, 2)}
    return {k: torch.round(v.clamp(0, 1) * 255) / 255 for k, v in rows.items()}


def row_for(models_dir: Path, data: list[str], eps: float) -> dict:
    v = version_on_test(models_dir, data)
    art, config, test, x, thr, model = v.art, v.config, v.test, v.x, v.thr, v.model
    probs = sigmoid(predict(model, x)[0])
    seed = config.get("seed", 0)
    rng = np.random.default_rng([seed, 1])  # the reals' subset; the fakes' is the trainer's rule
    fakes = detected_fakes(probs, test.labels, thr, config)
    reals = np.sort(rng.permutation(np.where((test.labels == 0) & (probs <= thr))[0])[: config.get("eval_subset", 256)])
    flips: dict[str, dict[str, float]] = {}
    for idx, name, flipped in ((fakes, "fakes_called_real", lambda p: p <= thr), (reals, "reals_called_fake", lambda p: p > thr)):
        for kind, xp in perturbations(x[idx], eps, seed).items():
            flips.setdefault(kind, {})[name] = float(flipped(sigmoid(predict(model, xp)[0])).mean())
    hf = hf_residual_std(test.images)
    real_hf, fake_hf = hf[test.labels == 0], hf[test.labels == 1]
    return {
        "version": art.version,
        "adv_objective": config.get("adv_objective") if config.get("adv_epochs", 0) else "none",
        "eps_255": eps * 255,
        "detected_fakes": len(fakes),
        "correct_reals": len(reals),
        "random_flips": flips,
        "hf_residual_std_255": {
            "real_mean": float(real_hf.mean()), "fake_mean": float(fake_hf.mean()),
            "real_minus_fake": float(real_hf.mean() - fake_hf.mean()),
            "real_q10_q50_q90": [float(q) for q in np.quantile(real_hf, [0.1, 0.5, 0.9])],
            "fake_q10_q50_q90": [float(q) for q in np.quantile(fake_hf, [0.1, 0.5, 0.9])],
            "auc_real_higher": roc_auc(-hf, test.labels),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--models", action="append", required=True, type=Path, help="a models dir holding one version")
    ap.add_argument("--eps", type=float, default=4.0, help="radius in 1/255 units")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(json.dumps({"rows": [row_for(d, args.data, args.eps / 255) for d in args.models]}, indent=1))


if __name__ == "__main__":
    main()
