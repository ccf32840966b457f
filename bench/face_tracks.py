"""Face detectors side by side on real video: track purity, crops per frame, faceless frames.

For each clip of a DFDC-format folder tree (``<root>/<part>/*.mp4``, never committed), frames
are sampled as ingest samples them (``--fps``) and each detector's FaceCropper (detector, crops,
tracker) sees the same frames. Single-person clips are the FaceForensics++ YouTube originals and
their fakes (``NNN.mp4``, ``NNN_MMM_<method>.mp4`` in the ``ffpp_*`` parts): one talking head
each, so every crop should sit in one track. With ``--sheets DIR``, 50 random crops per detector
are saved as a contact sheet for a hand check. Prints JSON.

    .venv/bin/python bench/face_tracks.py /work/realdata --detectors haar,blazeface [--sheets DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forensics.config import FaceSettings, LimitSettings
from forensics.errors import BadVideo
from forensics.faces import build_cropper
from forensics.video import FrameSampler, decode_file

SINGLE_PERSON = re.compile(r"^\d{3}(_\d{3}_[A-Za-z0-9]+)?\.mp4$")


def detector_settings(spec: str) -> FaceSettings:
    """``haar``, ``blazeface`` or ``onnx:PATH`` -> FaceSettings (max_faces 4 as shipped)."""
    if spec.startswith("onnx:"):
        return FaceSettings(detector="onnx", onnx_model=Path(spec[5:]))
    return FaceSettings(detector=spec)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--detectors", default="haar,blazeface")
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument(
        "--max-seconds", type=float, default=0, help="only the first N seconds of each clip (0: all)"
    )
    ap.add_argument("--sheets", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample-clips", type=int, default=0, help="a random subset of N clips (0: all)")
    args = ap.parse_args()
    specs = args.detectors.split(",")
    croppers = {s: build_cropper(detector_settings(s), 96) for s in specs}
    clips = sorted(args.root.glob("*/*.mp4"))
    if args.sample_clips:
        clips = sorted(random.Random(args.seed).sample(clips, min(args.sample_clips, len(clips))))
    per: dict[str, list[dict]] = {s: [] for s in specs}
    pool: dict[str, list[tuple[str, np.ndarray]]] = {s: [] for s in specs}
    seconds = Counter()
    for clip in clips:
        single = clip.parent.name.startswith("ffpp_") and bool(SINGLE_PERSON.match(clip.name))
        for c in croppers.values():
            c.reset()
        tracks: dict[str, Counter] = {s: Counter() for s in specs}
        crops_n, empty = Counter(), Counter()
        frames = 0
        try:
            for df in decode_file(clip, LimitSettings(), FrameSampler("fps", fps=args.fps)):
                if args.max_seconds and df.pts is not None and df.pts > args.max_seconds:
                    break
                frames += 1
                for s, c in croppers.items():
                    t0 = time.perf_counter()
                    crops = c.crops(df)
                    seconds[s] += time.perf_counter() - t0
                    crops_n[s] += len(crops)
                    empty[s] += not crops
                    for cr in crops:
                        tracks[s][cr.track] += 1
                        pool[s].append((f"{clip.parent.name}/{clip.name}#{df.index}", cr.image))
        except BadVideo as err:
            print(f"skipped: {err}", file=sys.stderr)
            continue
        print(f"{clip.parent.name}/{clip.name}: {frames} frames, crops "
              + " ".join(f"{s}={crops_n[s]}/{len(tracks[s])}tr" for s in specs), file=sys.stderr)  # fmt: skip
        for s in specs:
            largest = max(tracks[s].values()) if tracks[s] else 0
            per[s].append({"clip": f"{clip.parent.name}/{clip.name}", "single": single, "frames": frames,
                           "crops": crops_n[s], "no_face": empty[s], "tracks": len(tracks[s]),
                           "largest_share": largest / crops_n[s] if crops_n[s] else None})  # fmt: skip
    out: dict = {"clips": len(per[specs[0]]), "fps": args.fps}
    for s in specs:
        rows = per[s]
        single = [r for r in rows if r["single"]]
        shares = [r["largest_share"] for r in single if r["largest_share"] is not None]
        sf = sum(r["frames"] for r in single)
        af = sum(r["frames"] for r in rows)
        out[s] = {
            "single_person_clips": len(single),
            "single_largest_track_share_pooled": sum(
                r["largest_share"] * r["crops"] for r in single if r["crops"]
            )
            / max(1, sum(r["crops"] for r in single)),
            "single_largest_track_share_mean": float(np.mean(shares)) if shares else None,
            "single_largest_track_share_min": float(np.min(shares)) if shares else None,
            "single_clips_at_least_95pct": sum(x >= 0.95 for x in shares),
            "single_tracks_per_clip_mean": float(np.mean([r["tracks"] for r in single])) if single else None,
            "single_crops_per_frame": sum(r["crops"] for r in single) / max(1, sf),
            "single_no_face_frame_share": sum(r["no_face"] for r in single) / max(1, sf),
            "all_crops_per_frame": sum(r["crops"] for r in rows) / max(1, af),
            "all_no_face_frame_share": sum(r["no_face"] for r in rows) / max(1, af),
            "sampled_frames": af,
            "crop_seconds_per_frame": seconds[s] / max(1, af),
            "worst_single_clips": sorted(
                ((r["clip"], r["tracks"], round(r["largest_share"] or 0, 3)) for r in single),
                key=lambda t: t[2],
            )[:5],
        }
        if args.sheets:
            args.sheets.mkdir(parents=True, exist_ok=True)
            rng = random.Random(args.seed)
            picks = rng.sample(pool[s], min(50, len(pool[s])))
            sheet = np.zeros((5 * 96, 10 * 96, 3), np.uint8)
            for k, (_name, img) in enumerate(picks):
                sheet[(k // 10) * 96 : (k // 10 + 1) * 96, (k % 10) * 96 : (k % 10 + 1) * 96] = img
            name = s.replace(":", "_").replace("/", "_")
            cv2.imwrite(str(args.sheets / f"sheet_{name}.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
            (args.sheets / f"sheet_{name}.txt").write_text("\n".join(p[0] for p in picks) + "\n")
    print(json.dumps(out, indent=1, default=lambda v: round(v, 4) if isinstance(v, float) else v))


if __name__ == "__main__":
    main()
