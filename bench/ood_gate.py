"""A registered version's OOD table three ways: pooled scorer, shipped defence or gate, and with the face check.

Prints JSON. Rebuilds the version's test split (its recipe, as ``forensics eval`` does), makes the OOD
sets the trainer makes (``trainer/ood.py``, 200 crops each at most, seed + 2) and reports per set (and
for clean test crops): the pooled Mahalanobis scorer's flagged share (the trainer's table before issue
17), the shipped defence's (``defence.npz``), the quality gate's share without and with the face check
of the model's crop detector (``no_face``), and flagged-or-gated before (gate without the face check,
the eval's table before) and after (the tables now).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/ood_gate.py --models M --data D [--crops DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forensics.defence import Defence  # noqa: E402
from forensics.quality import face_check_detector, face_checker  # noqa: E402
from forensics.registry import Registry  # noqa: E402
from forensics.scoring import MahalanobisScorer  # noqa: E402
from trainer.data import as_float_tensor, version_recipe  # noqa: E402
from trainer.defence import crop_features  # noqa: E402
from trainer.evaluate import load_test_split  # noqa: E402
from trainer.metrics import predict  # noqa: E402
from trainer.models import WithChannelStats, load_discriminator  # noqa: E402
from trainer.ood import gated_rates, ood_sets  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", required=True)
    ap.add_argument("--model", help="version (default: current)")
    ap.add_argument("--data", required=True, action="append")
    ap.add_argument("--crops", help="crop cache (default: the version's)")
    args = ap.parse_args()
    art = Registry(args.models).load(args.model)
    _, config = version_recipe(art)
    test = load_test_split(args.data, config, args.crops or config["cache_dir"], workers=1)
    D = load_discriminator(art.path / "discriminator.pt").eval()
    scorer = MahalanobisScorer.load(art.scorer_path)
    shipped = Defence.load(art.path / "defence.npz")
    net = WithChannelStats(D).eval()
    detector = art.manifest.get("preprocessing", {}).get("crop", {}).get("detector")
    check = face_checker(detector)
    sets = {"clean_test": test.images,
            **ood_sets(test.images, n=min(200, len(test)), seed=int(config.get("seed", 0)) + 2)}  # fmt: skip
    rows = {}
    for name, imgs in sets.items():
        pooled = scorer.score(predict(D, as_float_tensor(imgs))[1]) > scorer.threshold
        flagged = shipped.combine(crop_features(shipped, scorer, net, imgs)) > shipped.threshold
        before, after = gated_rates(imgs, flagged), gated_rates(imgs, flagged, has_face=check(imgs))
        rows[name] = {"n": len(imgs), "pooled_flagged": float(pooled.mean()), "defence_flagged": float(flagged.mean()),
                      "gated_before": before["gated_rate"], "flagged_or_gated_before": before["flagged_or_gated_rate"],
                      "no_face": after["no_face_rate"], "gated_after": after["gated_rate"],
                      "flagged_or_gated_after": after["flagged_or_gated_rate"]}  # fmt: skip
    ood = [k for k in rows if k != "clean_test"]
    rows["all_ood"] = {k: float(np.mean([rows[c][k] for c in ood])) for k in rows[ood[0]] if k != "n"}
    out = {"version": art.version, "face_check": face_check_detector(detector), "rows": rows}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
