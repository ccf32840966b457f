"""End-to-end faces/s on a local Redis Cluster with 1, 2 and 3 frames shards (and as many detect
workers), against a single Redis in the same run.

Every role is a real process (`forensics ingest`, `forensics detect`), configured by FORENSICS_*
environment variables as in a deployment. Per configuration: start one ingest and N detect
processes, drop a warm-up clip and wait for its verdict (imports, model load, connections), then
drop the measured clips; time = first drop to last verdict; faces = the verdicts' faces_scored.
Whole frames at the model's input size (faces.detector = none), so the numbers measure the
pipeline and Redis layer rather than face detection.

    .venv/bin/python bench/cluster.py --models DIR [--clips 8] [--seconds 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import private_redis, sample_clip  # noqa: E402
from forensics.redisconn import connect  # noqa: E402
from forensics.registry import Registry  # noqa: E402
from forensics.streams import Keys  # noqa: E402
from tests.redis_cluster import LocalCluster  # noqa: E402


def _env(url: str, prefix: str, *, cluster: bool, shards: int, models: Path, work: Path, size: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORENSICS_")}
    env.update({
        "FORENSICS_REDIS__URL": url, "FORENSICS_REDIS__PREFIX": prefix,
        "FORENSICS_REDIS__CLUSTER": str(cluster).lower(), "FORENSICS_REDIS__SHARDS": str(shards),
        "FORENSICS_MODELS_DIR": str(models), "FORENSICS_STATE_DIR": str(work / "state"),
        "FORENSICS_LOG_FORMAT": "json", "FORENSICS_LOG_LEVEL": "warning",
        "FORENSICS_FACES__DETECTOR": "none", "FORENSICS_INGEST__FRAME_SIZE": str(size),
        "FORENSICS_INGEST__SAMPLE": "every_nth", "FORENSICS_INGEST__BATCH_SIZE": "16",
        "FORENSICS_INGEST__STABLE_SECONDS": "0.05", "FORENSICS_INGEST__POLL_INTERVAL": "0.02",
        "FORENSICS_DETECT__BLOCK_MS": "50", "FORENSICS_DETECT__INTRA_OP_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    })  # fmt: skip
    return env


def _verdicts(r, keys: Keys) -> list[dict]:
    return [json.loads(f[b"event"]) for _i, f in r.xrange(keys.alerts) if b'"kind":"verdict"' in f[b"event"]]


def run_config(name: str, url: str, *, cluster: bool, shards: int, workers: int, models: Path, size: int,
               clips: list[Path], warm: Path, work: Path) -> dict:  # fmt: skip
    prefix = f"b{name}{int(time.time() * 1000) % 10**8}"
    watch = work / f"watch-{prefix}"
    watch.mkdir(parents=True)
    env = _env(url, prefix, cluster=cluster, shards=shards, models=models, work=work, size=size)
    cmd = [sys.executable, "-m", "forensics.cli"]
    procs = [subprocess.Popen([*cmd, "detect", "--consumer", f"w{i}"], env=env, stdout=subprocess.DEVNULL)
             for i in range(workers)]  # fmt: skip
    procs.append(subprocess.Popen([*cmd, "ingest", "--watch", str(watch)], env=env, stdout=subprocess.DEVNULL))
    r = connect(url, cluster=cluster)
    keys = Keys(prefix, shards=shards, cluster=cluster)
    try:
        shutil.copy(warm, watch / warm.name)
        deadline = time.monotonic() + 300
        while not _verdicts(r, keys):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{name}: warm-up verdict never came")
            time.sleep(0.05)
        t0 = time.perf_counter()
        for c in clips:
            shutil.copy(c, watch / c.name)
        while len(_verdicts(r, keys)) < len(clips) + 1:
            if time.perf_counter() - t0 > 900:
                raise RuntimeError(f"{name}: verdicts missing after 900 s")
            time.sleep(0.02)
        seconds = time.perf_counter() - t0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    measured = [v for v in _verdicts(r, keys) if v["file"] != warm.name]
    faces = sum(v["faces_scored"] for v in measured)
    used = sorted({keys.shard_of(v["source"]) for v in measured})
    return {"config": name, "cluster": cluster, "shards": shards, "detect_workers": workers, "files": len(measured),
            "faces": faces, "seconds": round(seconds, 3), "faces_per_s": round(faces / seconds, 1),
            "shards_used": used}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=Path, required=True, help="registry with a current model")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=2, help="runs of every configuration, interleaved")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    size = Registry(args.models).current_input_size() or 64
    clips = [sample_clip(work / f"clip{i}.mp4", width=320, height=240, fps=25, seconds=args.seconds, fake=bool(i % 2))
             for i in range(args.clips)]  # fmt: skip
    (work / "warm").mkdir()
    warm = sample_clip(work / "warm" / "warmup.mp4", width=320, height=240, fps=25, seconds=0.5)
    runs: list[dict] = []
    with private_redis() as single_url, LocalCluster(work / "cluster", masters=3) as cl:
        configs = [("single", single_url, False, 1, 1)] + [(f"cluster{n}", cl.url, True, n, n) for n in (1, 2, 3)]
        for rep in range(args.repeats):
            order = configs if rep % 2 == 0 else configs[::-1]  # interleaved: load drifts hit all alike
            for name, url, cluster, shards, workers in order:
                runs.append(run_config(name, url, cluster=cluster, shards=shards, workers=workers, models=args.models,
                                       size=size, clips=clips, warm=warm, work=work))  # fmt: skip
    best = {}
    for run in runs:
        if run["config"] not in best or run["faces_per_s"] > best[run["config"]]["faces_per_s"]:
            best[run["config"]] = run
    ref = best["single"]["faces_per_s"]
    out = {
        "cpu_count": os.cpu_count(), "load_avg_at_end": os.getloadavg(), "clips": args.clips,
        "clip": "320x240 25 fps H.264, whole frames at the model's input size", "input_size": size,
        "runs": runs,
        "best_faces_per_s": {k: v["faces_per_s"] for k, v in best.items()},
        "vs_single_redis": {k: round(v["faces_per_s"] / ref, 3) for k, v in best.items()},
    }  # fmt: skip
    print(json.dumps(out, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
