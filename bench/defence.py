"""Cost per face of the detect worker's second line of defence against the bare ONNX model, same run,
and (with ``--data``) the detection of each option on the version's held-out test split.

Prints JSON, milliseconds per face (best of ``--repeats`` rounds over ``--faces`` crops in batches of
``--batch``; every round times the bare model and each option back to back, so a busy machine slows
them alike):
- ``bare_model``: the ONNX Runtime pass alone (logits + features);
- ``pooled_scorer``: ONNX pass + the pooled Mahalanobis score (versions before issue 8);
- ``options``: per defence option, ``LoadedModel.score`` with it (the plain pass and the squeezed
  copies in one ONNX call, the squeezers themselves, the numpy scoring), its ratio to the bare model,
  its extra model passes and the squeezers' own (OpenCV) time.

Options: ``file`` (the version's own ``defence.npz``), and with ``--data`` the candidates of
:data:`trainer.defence.CANDIDATES` named by ``--options`` (default: the shipped one, issue 8's four
squeezers, each single squeezer, no squeezer), fitted on the version's train/validation splits as
``forensics train`` fits them. With ``--data`` each option's ``detection`` on the test split
(:func:`trainer.defence.evaluate_defence`): PGD-10 at ``--eps`` on every fake test crop, the share of
the fooling examples flagged (``detection_rate``) and of the fooled tracks (``track_detection_rate``),
clean crop and track false-positive rates, OOD detection, and the adaptive attack (BPDA through the
squeezers, ``--adaptive-steps``) per frame and per track: ``combined_success`` = called real and not
flagged. Needs the ``train`` extra (torch) for ``--data``.

    .venv/bin/python bench/defence.py --models DIR [--version V] [--batch 32] [--data DIR ... [--cost-only]]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forensics.errors import ModelError
from forensics.model import load_model
from forensics.registry import Registry


def timed_rounds(fns: dict, repeats: int) -> dict[str, float]:
    """Fastest wall time (s) of each fn() over ``repeats`` rounds, every round running all of them in turn."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def fitted_options(model, data: list[str], names: list[str], seed: int) -> tuple[dict, dict]:
    """(name -> Defence fitted on the version's train/val splits, the splits) for ``names`` of CANDIDATES."""
    import torch

    from forensics.scoring import MahalanobisScorer
    from trainer.data import load_recipe_splits
    from trainer.defence import fit_defences
    from trainer.models import load_discriminator

    torch.set_num_threads(1)
    art = model.artifact
    config = json.loads((art.path / "report" / "metrics.json").read_text())["config"]
    splits = load_recipe_splits(data, config, config["cache_dir"], workers=1)
    D = load_discriminator(art.path / "discriminator.pt").eval()
    fitted = fit_defences(D, MahalanobisScorer.load(art.scorer_path), splits["train"], splits["val"],
                          fpr=float(config.get("anomaly_fpr", 0.05)), seed=seed)  # fmt: skip
    return {n: fitted[n] for n in names}, {"D": D, "config": config, **splits}


def detection(model, d, name: str, ctx: dict, args) -> dict:
    """The methods-table row and adaptive attacks of one option on the test split."""
    from trainer.defence import evaluate_defence

    ev = evaluate_defence(ctx["D"], model.scorer, {name: d}, ctx["test"], model.artifact.manifest["thresholds"],
                          shipped=name, seed=args.seed, eps=args.eps, adaptive_frames=args.adaptive_frames,
                          adaptive_steps=args.adaptive_steps)  # fmt: skip
    row = ev["methods"][name]
    keep = ("detection_rate", "clean_fpr", "auroc", "track_detection_rate", "track_clean_fpr", "track_auroc", "ood_all")
    return {**{k: row[k] for k in keep}, "fooling_examples": ev["fooling_examples"], "fooled_tracks": ev["fooled_tracks"],
            "adaptive_frame": ev.get("adaptive_frame"), "adaptive_track": ev.get("adaptive_track"),
            "calibration": {f"{k}_{q}": d.calibration.get(k, {}).get(q) for k in ("crop", "track") for q in ("p05", "p95")}
            if d.calibration else None}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/defence.py")
    p.add_argument("--models", required=True)
    p.add_argument("--version")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--faces", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--data", action="append", default=[], help="the version's training data: fit and score the options")
    p.add_argument("--options", nargs="*", help="candidate names of trainer.defence.CANDIDATES (with --data)")
    p.add_argument("--eps", type=float, default=4 / 255)
    p.add_argument("--adaptive-frames", type=int, default=200)
    p.add_argument("--adaptive-steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cost-only", action="store_true", help="with --data: fit the options, time them, skip detection")
    args = p.parse_args(argv)
    try:
        model = load_model(Registry(args.models), args.version, intra_op_threads=args.threads)
    except ModelError as err:
        print(f"bench/defence.py: {err}", file=sys.stderr)
        return 2
    options, ctx = {}, {}
    if model.defence is not None:
        options["file"] = model.defence
    if args.data:
        from forensics.squeeze import SQUEEZERS
        from trainer.defence import SHIPPED

        names = args.options or list(dict.fromkeys([SHIPPED, "channel+squeeze", *(f"channel+{s}" for s in SQUEEZERS),
                                                    "channel"]))  # fmt: skip
        fitted, ctx = fitted_options(model, args.data, names, args.seed)
        options.update(fitted)
    if not options:
        print(f"bench/defence.py: model {model.artifact.version} has no defence.npz and no --data: nothing to compare",
              file=sys.stderr)  # fmt: skip
        return 2
    rng = np.random.default_rng(0)
    # Smooth random crops (noise would make JPEG and the median filter slower than on faces).
    small = rng.integers(0, 256, (args.faces, 8, 8, 3), dtype=np.uint8)
    images = np.repeat(np.repeat(small, model.size // 8, axis=1), model.size // 8, axis=2)
    batches = [images[i : i + args.batch] for i in range(0, len(images), args.batch)]

    def each(fn, d=None):
        def run():
            if d is not None:
                model.defence = d
            for b in batches:
                fn(b)

        return run

    fns = {"bare_model": each(model.net.run), "pooled_scorer": each(lambda b: model.scorer.score(model.net.run(b).features))}
    for name, d in options.items():
        fns[name] = each(model.score, d)
        fns[f"{name}/squeezers"] = each(d.squeeze)
    ms = {k: 1000 * v / len(images) for k, v in timed_rounds(fns, args.repeats).items()}
    bare = ms["bare_model"]
    rows = {}
    for name, d in options.items():
        rows[name] = {"squeezers": list(d.squeezers), "extra_model_passes": d.extra_passes, "ms_per_face": ms[name],
                      "over_bare": ms[name] / bare, "squeezers_opencv_ms": ms[f"{name}/squeezers"]}  # fmt: skip
        if ctx and not args.cost_only:
            rows[name]["detection"] = detection(model, d, name, ctx, args)
            print(json.dumps({name: rows[name]}), file=sys.stderr, flush=True)  # progress: detection is slow
    print(json.dumps({
        "version": model.artifact.version, "input_size": model.size, "batch": args.batch, "faces": len(images),
        "ort_threads": args.threads, "ms_per_face": {"bare_model": bare, "pooled_scorer": ms["pooled_scorer"]},
        "options": rows, **({"test_crops": len(ctx["test"]), "eps": args.eps} if ctx else {}),
    }, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
