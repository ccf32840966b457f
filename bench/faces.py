"""Face detectors' speed at 720p and 1080p, and ingest throughput in face mode, against bare decoding.

Prints JSON. For each detector (haar, blazeface, blazeface with the landmark model following faces
between detections every 4th frame, and YuNet when ``--yunet FILE`` is given): FaceCropper
frames/s on the decoded frames of a synthetic face clip (trainer.synth: a real face photo on a
moving scene) at 1280x720 and 1920x1080 (detection + landmarks + crops + tracking, every frame),
then the ingest rate (video frames per second, ``FileIngest`` into a private Redis) with face
mode on at 2 fps sampling and at every frame, next to bare PyAV decoding of the same file
measured in the same run.

    .venv/bin/python bench/faces.py [--seconds 4] [--yunet face_detection_yunet.onnx]
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


def detector_configs(yunet: Path | None) -> dict[str, dict]:
    out = {"haar": {"detector": "haar"}, "blazeface": {"detector": "blazeface"},
           "blazeface_redetect4": {"detector": "blazeface", "redetect_every": 4}}  # fmt: skip
    if yunet is not None:
        out["yunet"] = {"detector": "onnx", "onnx_model": yunet}
    return out


def bare_decode_fps(clip: Path, frames: int) -> float:
    def run() -> None:
        with av.open(str(clip)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            for _ in c.decode(s):
                pass

    return frames / best_of(2, run)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--yunet", type=Path, default=None, help="a YuNet .onnx file, if you have one")
    args = ap.parse_args()
    configure_logging("bench", "warning", "json")
    work = Path(tempfile.mkdtemp(prefix="bench-faces-"))
    configs = detector_configs(args.yunet)
    out: dict = {"detectors": configs, "crop_size": 256}
    clips = {}
    for name, (w, h) in {"720p": (1280, 720), "1080p": (1920, 1080)}.items():
        clip = clips[name] = sample_clip(
            work / f"clip{name}.mp4", width=w, height=h, fps=25, seconds=args.seconds
        )
        with av.open(str(clip)) as c:
            frames = list(c.decode(video=0))
        res: dict = {"frames": len(frames), "bare_decode_fps": bare_decode_fps(clip, len(frames))}
        for label, cfg in configs.items():
            cropper = build_cropper(FaceSettings(**cfg), 256)
            cropper.crops(DecodedFrame(0, None, frames[0]))  # load and warm up outside the timing
            cropper.reset()
            found, t0 = 0, time.perf_counter()
            for i, f in enumerate(frames):
                found += len(cropper.crops(DecodedFrame(i, None, f)))
            dt = time.perf_counter() - t0
            res[label] = {"frames_per_s": len(frames) / dt, "crops_per_frame": found / len(frames),
                          "detector_runs": cropper.detections}  # fmt: skip
        out[name] = res
    clip = clips["720p"]
    frames720 = out["720p"]["frames"]
    with private_redis() as url:
        r = redis.Redis.from_url(url)
        ingest: dict = {"bare_decode_fps": bare_decode_fps(clip, frames720)}
        samplings = {
            "fps2": {"sample": "fps", "fps": 2.0},
            "every_frame": {"sample": "every_nth", "every_nth": 1},
        }
        for sname, sample in samplings.items():
            for label, cfg in configs.items():
                watch = work / f"{sname}-{label}"
                watch.mkdir()
                settings = load_settings(
                    state_dir=work / "state", redis={"url": url, "prefix": f"{sname}-{label}"}, faces=cfg,
                    ingest={"watch_dir": watch, "frame_size": 256, "batch_size": 16, "high_water": 1_000_000, **sample},
                )  # fmt: skip
                shutil.copy(clip, watch / clip.name)
                fi = FileIngest(settings, r)
                t0 = time.perf_counter()
                res = fi.process(watch / clip.name)
                dt = time.perf_counter() - t0
                ingest[f"{sname}_{label}"] = {"video_frames_per_s": frames720 / dt, "crops": res.images,
                                              "vs_bare_decode": frames720 / dt / ingest["bare_decode_fps"]}  # fmt: skip
        for sname in samplings:
            ingest[f"{sname}_blazeface_vs_haar"] = (
                ingest[f"{sname}_blazeface"]["video_frames_per_s"]
                / ingest[f"{sname}_haar"]["video_frames_per_s"]
            )
        out["ingest_720p"] = ingest
    for name in ("720p", "1080p"):
        out[name]["blazeface_vs_haar_frames_per_s"] = (
            out[name]["blazeface"]["frames_per_s"] / out[name]["haar"]["frames_per_s"]
        )
    print(json.dumps(out, indent=1, default=lambda v: round(v, 3) if isinstance(v, float) else str(v)))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
