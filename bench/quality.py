"""The input-quality gate's statistics on generated faces, and the defaults they give.

Prints JSON. Renders the uncompressed frames of synthetic REAL clips (``trainer.synth``: the
astronaut face with per-clip identities, motion, lighting and camera noise), finds the face with
the cropper the daemon runs, and cuts the same square region from each degraded version of the
frame, as ingest would:

- ``sharp``: the frame as rendered (the reference of this run);
- ``blur_s``: the crop under a Gaussian blur of sigma s pixels at the 64 px focus scale;
- ``jpeg_q``: the whole frame JPEG-coded at quality q (libjpeg, 8x8 grid of the frame), then cut;
- ``h264_crf``: the clip H.264-coded at that CRF (PyAV's libx264; 23 is what synthetic data uses);
- ``jpeg_q_unaligned``: the JPEG crops' blockiness measured as if the crop were on the grid at
  1:1 (no region): what mapping the frame's grid into the crop is worth;
- ``face_px``: the sharp frame downscaled so the face box's side shrinks, by face size.

Per condition: focus and blockiness percentiles (2, 50, 98), the share whose blockiness is
unmeasurable (grid finer than 2 crop pixels), and the share the shipped defaults flag. Each default
sits halfway (geometric mean) between the tail of what must pass and the tail of what must be
caught (``choose``): ``min_focus`` between the 2nd percentile of sharp and CRF-23 crops and the
98th percentile of sigma-1.5 crops; ``max_blockiness`` between the 98th percentile of uncompressed,
JPEG q75, CRF-23 and rescaled crops and the 2nd percentile of crops JPEG-coded at q15;
``min_face_px`` the face side at which the median focus of sharp crops falls to half that of
full-size faces (the detail a sigma-0.5 blur takes away), interpolated on log face size.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/quality.py [--clips 24] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forensics.config import FaceSettings, QualitySettings  # noqa: E402
from forensics.faces import build_cropper  # noqa: E402
from forensics.quality import blockiness, focus, low_quality  # noqa: E402
from trainer.synth import render_real_frames, write_clip  # noqa: E402

BLURS = (0.5, 1.0, 1.5, 2.0, 3.0)
JPEGS = (90, 75, 50, 30, 15)
CRFS = (23, 35, 45, 51)
SCALES = (0.7, 0.5, 0.4, 0.35, 0.3, 0.25, 0.2)
SMALL = 0.4


def cut(frame: np.ndarray, region: list[int], size: int) -> np.ndarray:
    """The crop ingest makes of ``region`` (as forensics.faces.cropper does)."""
    x0, y0, x1, y1 = region
    patch = frame[y0:y1, x0:x1]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_LINEAR)


def jpeg(frame: np.ndarray, q: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def h264(frames: list[np.ndarray], crf: int, fps: int) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.mp4"
        write_clip(path, frames, fps, crf)
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def collect(args) -> dict[str, dict]:
    """Per condition: crops uint8 [N, S, S, 3], regions, face sides."""
    out: dict[str, dict] = {}

    def add(name: str, crop: np.ndarray, region: list[int] | None, side: float) -> None:
        c = out.setdefault(name, {"crops": [], "regions": [], "face_px": []})
        c["crops"].append(crop)
        c["regions"].append(region)
        c["face_px"].append(side)

    cropper = build_cropper(FaceSettings(detector=args.detector), args.size)
    for clip in range(args.clips):
        frames = list(render_real_frames(args.seed + clip, width=args.width, height=args.height, fps=args.fps,
                                         frames=args.frames))  # fmt: skip
        coded = {crf: h264(frames, crf, args.fps) for crf in CRFS}
        cropper.reset()
        for t, frame in enumerate(frames):
            if t % args.every:
                continue
            found = cropper.crops_rgb(frame)
            if not found:
                continue
            c = max(found, key=lambda c: c.box[2] - c.box[0])
            side = float(max(c.box[2] - c.box[0], c.box[3] - c.box[1]))
            add("sharp", c.image, c.region, side)
            for s in BLURS:
                add(f"blur_{s:g}", cv2.GaussianBlur(c.image, (0, 0), s * args.size / 64), c.region, side)
            for q in JPEGS:
                add(f"jpeg_crop_{q}", jpeg(c.image, q), None, side)  # the crop itself coded, on its own grid
                add(f"jpeg_frame_{q}", cut(jpeg(frame, q), c.region, args.size), c.region, side)
            for crf in CRFS:
                add(f"h264_{crf}", cut(coded[crf][t], c.region, args.size), c.region, side)
            h, w = frame.shape[:2]
            for f in SCALES:
                small = cv2.resize(frame, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
                reg = [round(v * f) for v in c.region]
                add(f"scale_{f:g}", cut(small, reg, args.size), reg, side * f)
                if f == SMALL:  # a face the crop resolves the frame's grid on: where mapping the grid matters
                    for q in JPEGS:
                        img = cut(jpeg(small, q), reg, args.size)
                        add(f"small_jpeg_{q}", img, reg, side * f)
                        add(f"small_jpeg_{q}_unaligned", img, None, side * f)
    return {k: {"crops": np.stack(v["crops"]), "regions": v["regions"], "face_px": np.array(v["face_px"])}
            for k, v in out.items()}  # fmt: skip


def pcts(x: np.ndarray) -> dict[str, float | None]:
    x = x[np.isfinite(x)]
    if not len(x):
        return {"p2": None, "p50": None, "p98": None}
    return {f"p{p}": round(float(np.percentile(x, p)), 5) for p in (2, 50, 98)}


def choose(stats: dict[str, dict]) -> tuple[dict[str, float], dict[str, float]]:
    """The default thresholds from the measured statistics (rules in the module docstring), and the
    percentiles each was computed from."""
    f, b, face = stats["_focus"], stats["_block"], stats["_face"]

    def finite(keys) -> np.ndarray:
        x = np.concatenate([b[k] for k in keys])
        return x[np.isfinite(x)]

    normal = ["sharp", "h264_23", "jpeg_crop_75", "jpeg_frame_75"] + [k for k in b if k.startswith("scale_")]
    inputs = {
        "focus_p2_sharp_and_crf23": float(np.percentile(np.concatenate([f["sharp"], f["h264_23"]]), 2)),
        "focus_p98_blur_1.5": float(np.percentile(f["blur_1.5"], 98)),
        "blockiness_p98_normal": float(np.percentile(finite(normal), 98)),
        "blockiness_p2_jpeg_crop_15": float(np.percentile(finite(["jpeg_crop_15"]), 2)),
        "focus_half_sharp_median": 0.5 * float(np.median(f["sharp"])),
    }
    # Face side where the sharp crops' median focus falls to half the full-size median (log-linear).
    curve = sorted((float(np.median(face[k])), float(np.median(f[k]))) for k in f if k.startswith("scale_") or k == "sharp")
    sizes, foci = np.log([c[0] for c in curve]), np.array([c[1] for c in curve])
    half = inputs["focus_half_sharp_median"]
    min_face = float(np.exp(np.interp(half, foci, sizes))) if foci.min() < half < foci.max() else float(np.exp(sizes[0]))
    chosen = {
        "min_focus": round(float(np.sqrt(inputs["focus_p2_sharp_and_crf23"] * inputs["focus_p98_blur_1.5"])), 4),
        "max_blockiness": round(float(np.sqrt(inputs["blockiness_p98_normal"] * inputs["blockiness_p2_jpeg_crop_15"])), 2),
        "min_face_px": round(min_face),
    }
    return chosen, {k: round(v, 4) for k, v in inputs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--frames", type=int, default=6, help="frames rendered per clip")
    ap.add_argument("--every", type=int, default=3, help="measure every N-th rendered frame")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--size", type=int, default=64, help="crop side (the model's input size)")
    ap.add_argument("--detector", default="haar", help="the synthetic faces were drawn for Haar")
    ap.add_argument("--seed", type=int, default=9000)
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    t0 = time.perf_counter()
    data = collect(args)
    stats: dict[str, dict] = {"_focus": {}, "_block": {}, "_face": {}}
    for k, v in data.items():
        stats["_focus"][k] = focus(v["crops"])
        stats["_block"][k] = blockiness(v["crops"], v["regions"])
        stats["_face"][k] = v["face_px"]
    chosen, inputs = choose(stats)
    cfg = QualitySettings()  # what ships (forensics/config.py): the flag shares below are its
    conditions = {}
    for k, v in data.items():
        reasons = low_quality(v["crops"], [[0, 0, s, s] for s in v["face_px"]], v["regions"], cfg)
        blk = stats["_block"][k]
        conditions[k] = {
            "crops": len(v["crops"]), "face_px_median": round(float(np.median(v["face_px"])), 1),
            "focus": pcts(stats["_focus"][k]), "blockiness": pcts(blk),
            "blockiness_unmeasurable": round(float(np.mean(~np.isfinite(blk))), 3),
            "flagged": {r: round(float(np.mean([r in rs for rs in reasons])), 3) for r in ("blur", "blocky", "tiny_face")},
            "low_quality": round(float(np.mean([bool(rs) for rs in reasons])), 3),
        }  # fmt: skip
    out = {
        "bench": "quality", "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "reference": "sharp (uncompressed frames of this run)", "chosen_defaults": chosen, "rule_inputs": inputs,
        "shipped_defaults": cfg.model_dump(),
        "conditions": conditions, "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
