"""Ingest throughput on a 720p H.264 file, against bare decoders measured in the same run.

Prints JSON: frames/s of the ingest path (decode, every frame, reformat to 256x256, serialize,
XADD to a real Redis), of bare PyAV decoding (same threading as ingest, and single-threaded),
and of `ffmpeg -threads 1 -i FILE -f null -` when ffmpeg is on PATH.

    .venv/bin/python bench/ingest.py [--seconds 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import best_of, private_redis, sample_clip  # noqa: E402
from forensics.config import load_settings  # noqa: E402
from forensics.logs import configure_logging  # noqa: E402
from forensics.streams import Keys  # noqa: E402
from workers.ingest import FileIngest  # noqa: E402


def count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def pyav_decode(path: Path, threaded: bool) -> None:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        if threaded:
            s.thread_type = "AUTO"
        for _ in c.decode(s):
            pass


def ffmpeg_decode(path: Path) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-threads", "1", "-i", str(path), "-f", "null", "-"],
                   check=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    configure_logging("bench", "warning", "json")
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    clip = sample_clip(work / "clip720.mp4", width=1280, height=720, fps=25, seconds=args.seconds)
    frames = count_frames(clip)
    out: dict = {"file": {"width": 1280, "height": 720, "fps": 25, "frames": frames, "bytes": clip.stat().st_size},
                 "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "av": av.__version__}}  # fmt: skip
    t = best_of(args.repeat, lambda: pyav_decode(clip, threaded=True))
    out["pyav_decode_fps"] = frames / t
    t = best_of(args.repeat, lambda: pyav_decode(clip, threaded=False))
    out["pyav_decode_single_thread_fps"] = frames / t
    if shutil.which("ffmpeg"):
        out["ffmpeg_threads1_null_fps"] = frames / best_of(args.repeat, lambda: ffmpeg_decode(clip))
    else:
        out["ffmpeg_threads1_null_fps"] = None
    with private_redis() as url:
        r = redis.Redis.from_url(url)
        runs = []
        for i in range(args.repeat):
            watch = work / f"watch{i}"
            watch.mkdir()
            settings = load_settings(
                state_dir=work / "state", redis={"url": url, "prefix": f"bench{i}"},
                ingest={"watch_dir": watch, "sample": "every_nth", "every_nth": 1, "frame_size": args.size,
                        "batch_size": 16, "high_water": 1_000_000},
                faces={"detector": "none"},
            )  # fmt: skip
            ing = FileIngest(settings, r)
            shutil.copy(clip, watch / clip.name)
            t = best_of(1, lambda: ing.process(watch / clip.name))
            assert r.xlen(Keys(f"bench{i}").frames) == -(-frames // 16) + 1
            r.delete(Keys(f"bench{i}").frames)
            runs.append(t)
        out["ingest_fps"] = frames / min(runs)
    out["ingest_vs_pyav"] = out["ingest_fps"] / out["pyav_decode_fps"]
    out["target"] = "ingest_vs_pyav >= 0.8"
    out["meets_target"] = out["ingest_vs_pyav"] >= 0.8
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
