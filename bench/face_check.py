"""The quality gate's face check (``no_face``, forensics/quality.py): what it costs per crop and what it marks.

Prints JSON. Renders the first 2 frames of synthetic REAL clips (``trainer.synth``), crops the largest
face with each detector as ingest does (64 px), and runs that detector's face check
(:func:`forensics.faces.face_presence`, the crop enlarged to 128 px) on: the face crops, whole frames
downscaled to 64 px (what whole-frame mode scores), and the OOD sets of ``trainer/ood.py`` made from
the face crops (non-face patches, heavy noise, heavy blur, cartoon faces). With ``--real DIR`` (DFDC-format
parts, e.g. the development clips of README "Training for real video"), also BlazeFace crops of real
footage: up to ``--real-clips`` clips per part, one frame every ``--real-every``; per part the share
marked ``no_face``, and the OOD sets made from the real crops. Per detector: the share
marked ``no_face`` per set, and milliseconds per crop (median of ``--repeats`` timed runs over all face
crops, one thread; the machine's load changes it, so compare with the ONNX pass timed in the same run
when ``--models`` names a registry).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/face_check.py [--clips 48] [--models DIR] [--real DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forensics.config import FaceSettings  # noqa: E402
from forensics.faces import build_cropper, face_presence  # noqa: E402
from trainer.ood import ood_sets  # noqa: E402
from trainer.synth import render_real_frames  # noqa: E402

SIZE = 64


def timed(fn, x: np.ndarray, repeats: int) -> float:
    """Median milliseconds per crop of ``fn(x)``."""
    fn(x[:4])
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        runs.append(1000 * (time.perf_counter() - t0) / len(x))
    return statistics.median(runs)


def real_crops(root: Path, clips: int, every: int) -> dict[str, np.ndarray]:
    """BlazeFace crops (64 px, the largest face) of real footage: per DFDC-format part under ``root``,
    the first ``clips`` videos (sorted), one decoded frame every ``every``."""
    import av

    cropper = build_cropper(FaceSettings(detector="blazeface"), SIZE)
    out = {}
    for meta in sorted(root.glob("*/metadata.json")):
        crops = []
        for video in sorted(json.loads(meta.read_text()))[:clips]:
            cropper.reset()
            with av.open(str(meta.parent / video)) as container:
                for i, frame in enumerate(container.decode(video=0)):
                    if i % every:
                        continue
                    found = cropper.crops_rgb(frame.to_ndarray(format="rgb24"))
                    if found:
                        crops.append(max(found, key=lambda c: c.box[2] - c.box[0]).image)
        if crops:
            out[meta.parent.name] = np.stack(crops)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", help="a model registry: time one ONNX pass of its current version too")
    ap.add_argument("--real", type=Path, help="a folder of DFDC-format parts of real footage")
    ap.add_argument("--real-clips", type=int, default=8)
    ap.add_argument("--real-every", type=int, default=15)
    ap.add_argument("--out")
    args = ap.parse_args()
    seeds = range(900, 900 + args.clips)
    frames = [f for s in seeds for f in render_real_frames(s, width=320, height=240, frames=2)]
    whole = np.stack([cv2.resize(f, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for f in frames[::2]])
    out: dict = {"clips": args.clips, "frames": len(frames), "detectors": {}}
    for det in ("blazeface", "haar"):
        cropper = build_cropper(FaceSettings(detector=det), SIZE)
        crops = []
        for f in frames:
            cropper.reset()
            found = cropper.crops_rgb(f)
            if found:
                crops.append(max(found, key=lambda c: c.box[2] - c.box[0]).image)
        clean = np.stack(crops)
        check = face_presence(det)
        sets = {"face_crops": clean, "whole_frames": whole, **ood_sets(clean, n=len(clean), seed=2)}
        out["detectors"][det] = {
            "crops": len(clean),
            "ms_per_crop": round(timed(check, clean, args.repeats), 2),
            "no_face_rate": {k: round(float(1 - check(v).mean()), 4) for k, v in sets.items()},
        }
    if args.real:
        parts = real_crops(args.real, args.real_clips, args.real_every)
        check = face_presence("blazeface")
        pooled = np.concatenate(list(parts.values()))
        out["real"] = {
            "crops": {k: len(v) for k, v in parts.items()},
            "no_face_rate": {k: round(float(1 - check(v).mean()), 4) for k, v in parts.items()},
            "ood_no_face_rate": {k: round(float(1 - check(v).mean()), 4)
                                 for k, v in ood_sets(pooled, n=min(len(pooled), 192), seed=2).items()},
        }  # fmt: skip
    if args.models:
        from forensics.registry import Registry
        from forensics.runtime import OnnxDiscriminator

        art = Registry(args.models).load()
        onnx = OnnxDiscriminator(art.model_path, intra_op_threads=1)
        x = np.concatenate([whole] * 2)[:64]
        out["onnx_pass_ms_per_crop"] = round(timed(onnx.run, x, args.repeats), 3)
        out["onnx_model"] = f"{args.models}:{art.version} (input {art.input_size})"
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
