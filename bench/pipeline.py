"""Detect-side throughput and latency on this machine, with references measured in the same run.

Prints JSON:
- inference images/s of the detect worker's model call (ONNX Runtime, incl. Mahalanobis scoring)
  against torch eager on the same discriminator weights and batch size;
- end-to-end faces scored per second from file drop to verdict, one ingest and one detect worker,
  against the standalone ingest rate (face mode) and the standalone inference rate;
- frame-to-alert latency p50/p99 for a live stream played at real time: a live FrameBatch is
  added every 1/fps seconds, and latency is result time minus the batch's wall clock.

    .venv/bin/python bench/pipeline.py --models DIR [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import private_redis, sample_clip  # noqa: E402
from forensics.config import load_settings  # noqa: E402
from forensics.logs import configure_logging  # noqa: E402
from forensics.model import load_model  # noqa: E402
from forensics.registry import Registry  # noqa: E402
from forensics.streams import Keys, ensure_group  # noqa: E402
from forensics.wire import FrameBatch, encode  # noqa: E402
from workers.detect import DetectWorker  # noqa: E402
from workers.ingest import FileIngest  # noqa: E402


def inference_rates(models: Path, batch: int, seconds: float = 5.0) -> dict:
    import torch  # noqa: PLC0415

    from trainer.models import build_discriminator  # noqa: PLC0415

    model = load_model(Registry(models))
    size = model.size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)

    def rate(fn) -> float:
        fn()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fn()
            n += batch
        return n / (time.perf_counter() - t0)

    ort_rate = rate(lambda: model.score(images))
    ort_only = rate(lambda: model.net.run(images))
    # torch eager: the same weights, loaded from the ONNX initializers would be circuitous; the
    # trainer's checkpoint holds them, but a fresh model has the same architecture and cost.
    d = build_discriminator(size).eval()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255

    def torch_call():
        with torch.inference_mode():
            d(x)

    torch_rate = rate(torch_call)
    return {"batch": batch, "onnxruntime_images_per_s": ort_only, "onnxruntime_plus_scorer_images_per_s": ort_rate,
            "torch_eager_images_per_s": torch_rate, "onnx_vs_torch": ort_only / torch_rate,
            "provider": model.net.provider, "torch_threads": torch.get_num_threads()}  # fmt: skip


def end_to_end(models: Path, url: str, work: Path) -> dict:
    r = redis.Redis.from_url(url)
    clips = [sample_clip(work / f"e2e{i}.mp4", width=640, height=480, fps=25, seconds=4.0, fake=bool(i % 2))
             for i in range(4)]  # fmt: skip
    size = load_model(Registry(models)).size

    def settings(prefix: str, watch: Path):
        return load_settings(state_dir=work / "state", models_dir=models, log_format="json",
                             redis={"url": url, "prefix": prefix},
                             ingest={"watch_dir": watch, "frame_size": size, "sample": "every_nth", "every_nth": 1,
                                     "batch_size": 16, "stable_seconds": 0.0, "poll_interval": 0.02},
                             detect={"block_ms": 50})  # fmt: skip

    # Standalone ingest (face mode), no consumer.
    watch = work / "w-ingest"
    watch.mkdir()
    s = settings("ing", watch)
    ing = FileIngest(s, r)
    faces, t0 = 0, time.perf_counter()
    for c in clips:
        shutil.copy(c, watch / c.name)
        faces += ing.process(watch / c.name).images
    ingest_rate = faces / (time.perf_counter() - t0)
    # Standalone detect on what ingest produced.
    w = DetectWorker(s, r, consumer="bench")
    w.load_initial()
    t0 = time.perf_counter()
    while w.step_new():
        pass
    detect_rate = faces / (time.perf_counter() - t0)
    # Both together, drop to last verdict.
    watch = work / "w-e2e"
    watch.mkdir()
    s = settings("e2e", watch)
    ing, w = FileIngest(s, r), DetectWorker(s, r, consumer="bench")
    w.load_initial()
    stop = threading.Event()
    threads = [threading.Thread(target=f, args=(stop,), daemon=True) for f in (ing.run, w.run)]
    t0 = time.perf_counter()
    for c in clips:
        shutil.copy(c, watch / c.name)
    for t in threads:
        t.start()
    keys = Keys("e2e")
    while sum(b'"kind":"verdict"' in f[b"event"] for _i, f in r.xrange(keys.alerts)) < len(clips):
        time.sleep(0.01)
    e2e_s = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join(10)
    e2e_rate = faces / e2e_s
    return {"faces": faces, "ingest_faces_per_s": ingest_rate, "detect_faces_per_s": detect_rate,
            "end_to_end_faces_per_s": e2e_rate, "e2e_vs_slower_stage": e2e_rate / min(ingest_rate, detect_rate)}  # fmt: skip


def live_latency(models: Path, url: str, work: Path, fps: float = 10.0, seconds: float = 15.0) -> dict:
    r = redis.Redis.from_url(url)
    s = load_settings(state_dir=work / "state", models_dir=models, log_format="json", redis={"url": url, "prefix": "live"},
                      detect={"block_ms": 50})  # fmt: skip
    keys = Keys("live")
    ensure_group(r, keys.frames)
    w = DetectWorker(s, r, consumer="bench")
    w.load_initial()
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,), daemon=True)
    t.start()
    size = w.model.size
    img = np.random.default_rng(1).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    n = int(fps * seconds)
    t_start = time.time()
    for i in range(n):
        target = t_start + i / fps
        time.sleep(max(0.0, target - time.time()))
        b = FrameBatch(source="cam", seq=i, source_kind="live", images=img, frame_index=[i], pts=[i / fps],
                       wall=[time.time()], box=[[0, 0, size, size]], track=[0], frame_size=(size, size))  # fmt: skip
        r.xadd(keys.frames, encode(b))
    time.sleep(1.0)
    stop.set()
    t.join(10)
    lat = []
    for _id, f in r.xrange(keys.results):
        ev = json.loads(f[b"event"])
        lat.append(ev["scored_at"] - ev["wall"])
    lat_ms = np.array(lat) * 1000
    return {"fps": fps, "frames": n, "results": len(lat), "p50_ms": float(np.percentile(lat_ms, 50)),
            "p99_ms": float(np.percentile(lat_ms, 99)),
            "measured": "result written (scored_at) minus the batch's wall clock at XADD time"}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=Path, required=True, help="registry with a current model")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    configure_logging("bench", "warning", "json")
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    out = {"inference": inference_rates(args.models, args.batch)}
    with private_redis() as url:
        out["end_to_end"] = end_to_end(args.models, url, work)
        out["live_latency"] = live_latency(args.models, url, work)
    out["targets"] = {"onnx_vs_torch >= 1.5": out["inference"]["onnx_vs_torch"] >= 1.5,
                      "e2e_vs_slower_stage >= 0.8": out["end_to_end"]["e2e_vs_slower_stage"] >= 0.8}  # fmt: skip
    print(json.dumps(out, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
