"""Face detection speed on 720p frames, and ingest throughput in face mode on a 720p file.

Prints JSON: Haar faces/s at the default detection width (and at full width for reference),
then ingest frames/s (and faces/s) with face mode on, sampling every frame and at 2 fps, against
bare PyAV decoding of the same file measured in the same run.

    .venv/bin/python bench/faces.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import best_of, private_redis, sample_clip  # noqa: E402
from forensics.config import FaceSettings, load_settings  # noqa: E402
from forensics.faces import build_cropper  # noqa: E402
from forensics.logs import configure_logging  # noqa: E402
from forensics.video import DecodedFrame  # noqa: E402
from workers.ingest import FileIngest  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    configure_logging("bench", "warning", "json")
    work = Path(tempfile.mkdtemp(prefix="bench-faces-"))
    clip = sample_clip(work / "clip720.mp4", width=1280, height=720, fps=25, seconds=args.seconds)
    with av.open(str(clip)) as c:
        frames = [f for f in c.decode(video=0)]
    out: dict = {"file": {"width": 1280, "height": 720, "frames": len(frames)}}
    for width in (FaceSettings().detect_width, 1280):
        cropper = build_cropper(FaceSettings(detect_width=width), 256)
        found = 0
        t0 = time.perf_counter()
        for i, f in enumerate(frames):
            found += len(cropper.crops(DecodedFrame(i, None, f)))
        dt = time.perf_counter() - t0
        out[f"haar_detect_width_{width}"] = {"frames_per_s": len(frames) / dt, "faces_per_s": found / dt,
                                             "frames_with_face": found / len(frames)}  # fmt: skip

    def bare() -> None:
        with av.open(str(clip)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            for _ in c.decode(s):
                pass

    out["pyav_decode_fps"] = len(frames) / best_of(2, bare)
    with private_redis() as url:
        r = redis.Redis.from_url(url)
        for label, sample in (("every_frame", {"sample": "every_nth", "every_nth": 1}), ("fps2", {"sample": "fps", "fps": 2.0})):
            watch = work / label
            watch.mkdir()
            settings = load_settings(
                state_dir=work / "state", redis={"url": url, "prefix": label},
                ingest={"watch_dir": watch, "frame_size": 256, "batch_size": 16, "high_water": 1_000_000, **sample},
            )  # fmt: skip
            shutil.copy(clip, watch / clip.name)
            t0 = time.perf_counter()
            res = FileIngest(settings, r).process(watch / clip.name)
            dt = time.perf_counter() - t0
            out[f"ingest_face_mode_{label}"] = {"video_frames_per_s": len(frames) / dt, "faces_per_s": res.images / dt,
                                                "faces": res.images}  # fmt: skip
    print(json.dumps(out, indent=1, default=lambda v: round(v, 3)))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
