"""Latency per face of the detect worker's full defence against the bare ONNX model, same run.

Prints JSON, all in milliseconds per face (best of ``--repeats`` runs over ``--faces`` crops in
batches of ``--batch``):
- ``bare_model``: the ONNX Runtime pass alone (logits + features);
- ``pooled_scorer``: ONNX pass + the pooled Mahalanobis score (what versions before issue 8 ran);
- ``full_defence``: ``LoadedModel.score`` with ``defence.npz``: the plain pass, one pass per
  squeezer, the squeezers themselves (OpenCV) and the numpy scoring;
- ``extra_per_face``: full_defence - bare_model, and ``extra_model_passes``.

    .venv/bin/python bench/defence.py --models DIR [--version V] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import best_of
from forensics.errors import ModelError
from forensics.model import load_model
from forensics.registry import Registry


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/defence.py")
    p.add_argument("--models", required=True)
    p.add_argument("--version")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--faces", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    args = p.parse_args(argv)
    try:
        model = load_model(Registry(args.models), args.version, intra_op_threads=args.threads)
    except ModelError as err:
        print(f"bench/defence.py: {err}", file=sys.stderr)
        return 2
    if model.defence is None:
        print(f"bench/defence.py: model {model.artifact.version} has no defence.npz: train a new version", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    # Smooth random crops (noise would make JPEG and the median filter slower than on faces).
    small = rng.integers(0, 256, (args.faces, 8, 8, 3), dtype=np.uint8)
    images = np.repeat(np.repeat(small, model.size // 8, axis=1), model.size // 8, axis=2)
    batches = [images[i : i + args.batch] for i in range(0, len(images), args.batch)]

    def run(fn):
        return 1000 * best_of(args.repeats, lambda: [fn(b) for b in batches]) / len(images)

    bare = run(model.net.run)
    pooled = run(lambda b: model.scorer.score(model.net.run(b).features))
    full = run(model.score)
    squeeze_only = run(model.defence.squeeze)
    print(json.dumps({
        "version": model.artifact.version, "input_size": model.size, "batch": args.batch, "faces": len(images),
        "ort_threads": args.threads, "blocks": list(model.defence.blocks), "squeezers": list(model.defence.squeezers),
        "extra_model_passes": model.defence.extra_passes,
        "ms_per_face": {"bare_model": bare, "pooled_scorer": pooled, "full_defence": full,
                        "squeezers_opencv": squeeze_only, "extra_per_face": full - bare},
        "full_over_bare": full / bare,
    }, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
