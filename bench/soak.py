"""Soak: the daemon as processes under mixed load and faults; prints JSON.

Runs a redis-server (append-only, appendfsync always), `forensics ingest` (a watch folder plus
two live RTSP sources from tests/rtsp_server.py) and `forensics detect`, drops files all along
(good MP4 and TS files, a corrupt one now and then), SIGKILLs Redis once (at 1/3 of the run,
restarted on the same port after --outage seconds) and SIGKILLs the detect worker once (at 2/3,
restarted). Every --sample seconds it records each process's RSS, the detect backlog and the
verdict count. At the end it waits for the last verdicts and reports lost and duplicated
verdicts (target 0 and 0) and RSS drift (last quarter of the run vs the first quarter after
warm-up; target within 10%).

    python bench/soak.py --seconds 90          # the short run (measured in the issue report)
    python bench/soak.py --seconds 1800        # the 30-minute soak

The model is --models DIR (a registry with a current version) or, by default, a small untrained
exported version (tests/tinymodel.py): the soak measures the daemon, not the classifier.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rtsp import Server  # noqa: E402
from forensics.streams import Keys, backlog  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.media import write_test_video  # noqa: E402
from tests.redis_process import RedisProcess  # noqa: E402

PREFIX = "soak"


def _role(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "forensics.cli", *args], env=env, stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip


def _rss_mb(p: subprocess.Popen) -> float | None:
    try:
        return psutil.Process(p.pid).memory_info().rss / 2**20
    except psutil.Error:
        return None


def _verdicts(r: redis.Redis) -> list[dict]:
    try:
        return [json.loads(f[b"event"]) for _i, f in r.xrange(Keys(PREFIX).alerts)
                if b'"kind":"verdict"' in f[b"event"]]  # fmt: skip
    except redis.RedisError:
        return []


def _drift(series: list[tuple[float, float]], start: float, end: float) -> dict | None:
    """RSS (MB) median of the first and last quarter of [start, end], and their ratio."""
    q = (end - start) / 4
    first = sorted(v for t, v in series if start <= t < start + q)
    last = sorted(v for t, v in series if end - q <= t <= end)
    if not first or not last:
        return None
    a, b = first[len(first) // 2], last[len(last) // 2]
    return {"first_quarter_mb": round(a, 1), "last_quarter_mb": round(b, 1), "ratio": round(b / a, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--drop-every", type=float, default=3.0, help="seconds between dropped files")
    ap.add_argument("--outage", type=float, default=5.0, help="seconds Redis stays down")
    ap.add_argument("--sample", type=float, default=2.0)
    ap.add_argument("--models", type=Path)
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temp dir)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="soak-"))
    work.mkdir(parents=True, exist_ok=True)
    models = args.models
    if models is None:
        from tests.tinymodel import make_tiny_registry

        models = work / "models"
        if not (models / "current").exists():
            make_tiny_registry(models, size=32)
    media = work / "media"
    media.mkdir(exist_ok=True)
    clip = write_test_video(media / "live.mp4", frames=100, fps=25, width=160, height=120, gop=25)
    sources = [write_test_video(media / "a.mp4", frames=60, fps=30, width=160, height=120),
               write_test_video(media / "b.mp4", frames=90, fps=30, width=128, height=96, faststart=False)]  # fmt: skip
    bad = media / "bad.mp4"
    bad.write_bytes(os.urandom(20_000))
    rserver = RedisProcess(work / "redis", free_port())
    rserver.start()
    rtsp = Server(clip, 2)
    watch = work / "watch"
    watch.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FORENSICS_REDIS__URL": rserver.url, "FORENSICS_REDIS__PREFIX": PREFIX,
           "FORENSICS_MODELS_DIR": str(models), "FORENSICS_STATE_DIR": str(work / "state"), "FORENSICS_LOG_FORMAT": "json",
           "FORENSICS_FACES__DETECTOR": "none", "FORENSICS_INGEST__FRAME_SIZE": "32", "FORENSICS_INGEST__FPS": "5",
           "FORENSICS_INGEST__STABLE_SECONDS": "0.5", "FORENSICS_DETECT__PROVIDERS": '["CPUExecutionProvider"]',
           "FORENSICS_DETECT__INTRA_OP_THREADS": "1", "FORENSICS_DETECT__CLAIM_IDLE_MS": "5000", "OMP_NUM_THREADS": "1",
           "FORENSICS_SOURCES": json.dumps([{"id": f"cam{i}", "url": f"rtsp://127.0.0.1:{rtsp.port}/s{i}", "fps": 2.0}
                                            for i in range(2)])}  # fmt: skip
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    ingest = _role(["ingest", "--watch", str(watch)], env, logs / "ingest.log")
    detect = _role(["detect", "--consumer", "soak-1"], env, logs / "detect.log")
    r = redis.Redis.from_url(rserver.url, socket_timeout=2, socket_connect_timeout=1)
    samples: list[dict] = []
    rss: dict[str, list[tuple[float, float]]] = {"ingest": [], "detect": []}
    dropped: list[str] = []
    bad_files: list[str] = []
    events: list[dict] = []
    t0 = time.monotonic()
    next_drop = next_sample = 0.0
    redis_killed = detect_killed = False
    stop = threading.Event()
    try:
        while (now := time.monotonic() - t0) < args.seconds:
            if now >= next_drop:
                n = len(dropped) + len(bad_files)
                if n % 10 == 9:
                    name = f"bad{n:05d}.mp4"
                    (watch / name).write_bytes(bad.read_bytes())
                    bad_files.append(name)
                else:
                    src = sources[n % 2]
                    name = f"f{n:05d}{src.suffix}"
                    tmp = watch / f".{name}"
                    tmp.write_bytes(src.read_bytes())
                    os.replace(tmp, watch / name)
                    dropped.append(name)
                next_drop = now + args.drop_every
            if not redis_killed and now >= args.seconds / 3:
                rserver.kill()
                events.append({"at_s": round(now, 1), "event": "redis SIGKILL"})
                time.sleep(args.outage)
                rserver.start()
                events.append({"at_s": round(time.monotonic() - t0, 1), "event": "redis back"})
                redis_killed = True
            if not detect_killed and now >= 2 * args.seconds / 3:
                detect.send_signal(signal.SIGKILL)
                detect.wait(10)
                detect = _role(["detect", "--consumer", "soak-2"], env, logs / "detect.log")
                events.append({"at_s": round(now, 1), "event": "detect SIGKILL + restart"})
                detect_killed = True
            if now >= next_sample:
                row = {"t_s": round(now, 1), "verdicts": len(_verdicts(r))}
                for name, p in (("ingest", ingest), ("detect", detect)):
                    mb = _rss_mb(p)
                    row[f"{name}_rss_mb"] = round(mb, 1) if mb else None
                    if mb:
                        rss[name].append((now, mb))
                try:
                    row["backlog"] = backlog(r, Keys(PREFIX).frames)
                    row["redis_keys"] = r.dbsize()
                except redis.RedisError:
                    row["backlog"] = None
                samples.append(row)
                next_sample = now + args.sample
            if ingest.poll() is not None or detect.poll() is not None:
                events.append({"at_s": round(now, 1), "event": "a worker exited",
                               "ingest": ingest.poll(), "detect": detect.poll()})  # fmt: skip
                break
            time.sleep(0.1)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            files = [v.get("file") for v in _verdicts(r)]
            if set(dropped) | set(bad_files) <= set(files):
                break
            time.sleep(0.5)
        verdicts = _verdicts(r)
        files = [v.get("file") for v in verdicts]
        end = time.monotonic() - t0
        warm = min(10.0, args.seconds / 6)
        out = {
            "bench": "soak",
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "shared": True},
            "seconds": round(end, 1),
            "files_dropped": len(dropped) + len(bad_files),
            "bad_files": len(bad_files),
            "verdicts": len(verdicts),
            "lost_verdicts": sorted(set(dropped + bad_files) - set(files)),
            "duplicated_verdicts": sorted({f for f in files if files.count(f) > 1}),
            "error_verdicts_for_good_files": sorted(v["file"] for v in verdicts
                                                    if v.get("file") in dropped and v.get("label") == "ERROR"),  # fmt: skip
            "in_done_without_verdict": sorted({p.name for p in (watch / "done").glob("*")} - set(files)),
            "events": events,
            "rss_drift": {"ingest": _drift(rss["ingest"], warm, args.seconds),
                          # the detect worker was restarted at 2/3: its drift is measured before that
                          "detect": _drift(rss["detect"], warm, 2 * args.seconds / 3)},  # fmt: skip
            "live": {},
            "samples": samples,
            "work": str(work),
        }
        for i in range(2):
            h = {k.decode(): v.decode() for k, v in r.hgetall(Keys(PREFIX).source(f"cam{i}")).items()}
            out["live"][f"cam{i}"] = {k: h.get(k) for k in ("state", "frames_decoded", "frames_sent", "frames_dropped",
                                                            "dropped_redis", "reconnects")}  # fmt: skip
        print(json.dumps(out, indent=1))
    finally:
        stop.set()
        for p in (ingest, detect):
            p.terminate()
        for p in (ingest, detect):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        rtsp.stop()
        rserver.stop()


if __name__ == "__main__":
    main()
