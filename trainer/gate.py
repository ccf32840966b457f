"""The promotion gate: the candidate and the current model on the same held-out set, same protocol.

The held-out set is fixed by configuration, not by the run: ``retrain.holdout_dir`` if set (a
DFDC-format folder no intake may contain), else the current model's own test split of its base
data (``split_by_group`` with the shares and seed recorded in its training config, which the
candidate reuses, so the candidate never trains on it either). Its fingerprint (sha256 of crops
and labels) is kept in ``<models>/holdout.json`` and every run record says whether it changed.

Both models go through :func:`trainer.evaluate.run_evaluation` in quick mode. The candidate is
promoted only if its clean frame AUC is at most ``auc_margin`` below the current model's and its
PGD 4/255 attack success rate at most ``asr_tolerance`` above it, and it fails none of the
gradient-masking sanity checks (``MASKING_CHECKS``) that the current model passes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from forensics.registry import Artifact
from forensics.runtime import OnnxDiscriminator
from forensics.scoring import MahalanobisScorer
from trainer.data import CropSet, read_dataset, recipe_cache
from trainer.evaluate import load_test_split, run_evaluation
from trainer.models import load_discriminator

GATE_ATTACK = "pgd@4/255"
# Sanity checks whose failure means the attack numbers cannot be trusted (gradient masking or a
# broken attack): a candidate that fails one the current model passes is never promoted, since a
# masked model would otherwise pass the gate on a spuriously low attack success rate.
MASKING_CHECKS = (
    "share of zero input gradients ~0",
    "unbounded PGD reaches >= 95%",
    "every attack stays in [0,1] and its L-inf ball",
)


def holdout_set(holdout_dir: Path | None, config: dict[str, Any], cache_dir: Path) -> tuple[CropSet, dict[str, Any]]:
    """The gate's crops and a description {kind, roots, videos, crops, fingerprint}."""
    if holdout_dir is not None:
        videos = read_dataset([holdout_dir])
        cache = recipe_cache(cache_dir, config)
        cache.build(videos, progress=False)
        crops, kind, roots = cache.load(videos), "holdout_dir", [str(holdout_dir)]
    else:
        crops = load_test_split(config["data"], config, cache_dir)
        kind, roots = "current model's test split", list(config["data"])
    info = {"kind": kind, "roots": roots, "videos": len(crops.videos), "crops": len(crops),
            "fingerprint": crops.fingerprint()}  # fmt: skip
    return crops, info


def remember_holdout(models_dir: Path, info: dict[str, Any]) -> bool:
    """Store the holdout's description; True if one was stored before and it differs (the gate set moved)."""
    path = Path(models_dir) / "holdout.json"
    changed = False
    if path.exists():
        try:
            if json.loads(path.read_text()).get("fingerprint") == info["fingerprint"]:
                return False
        except ValueError:
            pass
        changed = True
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, path)
    return changed


def gate_metrics(art: Artifact, holdout: CropSet, *, seed: int = 0, max_fakes: int = 100) -> dict[str, Any]:
    """The eval protocol (quick) for one registered version on ``holdout``: the numbers the gate compares."""
    D = load_discriminator(art.path / art.manifest.get("torch_weights", "discriminator.pt"))
    onnx = OnnxDiscriminator(art.model_path, intra_op_threads=1)
    scorer = MahalanobisScorer.load(art.scorer_path)
    # The decision rests on white-box PGD; the query attacks (slow, and bounded by white-box PGD by
    # the sanity checks) are left to `forensics eval`.
    result = run_evaluation(D, lambda xs: onnx.run_float(xs).logits, scorer, art.manifest["thresholds"], holdout,
                            seed=seed, max_fakes=max_fakes, quick=True, blackbox_images=0, square_images=0,
                            square_tracks=0)  # fmt: skip
    attack = result["attacks"].get(GATE_ATTACK, {})
    return {
        "version": art.version,
        "clean_frame_auc": result["clean"]["frame_auc"],
        "clean_video_auc": result["clean"]["video_auc"],
        "frame_accuracy": result["clean"]["frame_accuracy"],
        "attack": GATE_ATTACK,
        "attack_success_rate": attack.get("success_rate", float("nan")),
        "attacked_fakes": result["attacked_fakes"],
        "success": {k: v["success_rate"] for k, v in result["attacks"].items()},
        "sanity_failed": [c["name"] for c in result["sanity"] if not c["passed"]],
    }


def decide(current: dict[str, Any], candidate: dict[str, Any], *, auc_margin: float,
           asr_tolerance: float) -> tuple[bool, str]:  # fmt: skip
    """(promote?, reason with the numbers)."""
    ca, cu = candidate["clean_frame_auc"], current["clean_frame_auc"]
    sa, su = candidate["attack_success_rate"], current["attack_success_rate"]
    if not (math.isfinite(ca) and math.isfinite(cu)):
        return False, f"clean AUC undefined (candidate {ca}, current {cu})"
    masked = [c for c in MASKING_CHECKS if c in candidate.get("sanity_failed", ())
              and c not in current.get("sanity_failed", ())]  # fmt: skip
    if masked:
        return False, (f"the candidate fails sanity checks the current model passes ({'; '.join(masked)}): "
                       "its attack numbers are not trustworthy (gradient masking?)")
    if ca < cu - auc_margin:
        return False, f"clean frame AUC {ca:.4f} is more than {auc_margin} below the current {cu:.4f}"
    if not math.isfinite(sa):
        return False, "the candidate detects no held-out fake, so its attack success rate is undefined"
    if math.isfinite(su) and sa > su + asr_tolerance:
        return False, f"{GATE_ATTACK} success {sa:.4f} is more than {asr_tolerance} above the current {su:.4f}"
    return True, (f"clean frame AUC {ca:.4f} vs {cu:.4f} (margin {auc_margin}), "
                  f"{GATE_ATTACK} success {sa:.4f} vs {su:.4f} (tolerance {asr_tolerance})")  # fmt: skip
