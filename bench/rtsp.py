"""Live RTSP capacity: how many 720p 25 fps streams one ingest process sustains on this machine.

The streams are served by tests/rtsp_server.py (GStreamer, system python3) from a synthetic face
clip (trainer.synth), one mount per stream, over RTSP/TCP on loopback. The ingest process is the
real CLI (`forensics ingest --rtsp ID=URL ...`, default live settings: every frame decoded on one
thread per stream, sampled at 2 fps, face crops at 256x256 with ``--detector`` (default the shipped
blazeface), XADD to a private Redis). One stream with Haar and one without face detection are
measured in the same run for reference.

For N streams (ramped from 1, guided by the CPU one stream costs) it measures, over a window:
decoded and sampled frame rates per stream, drops that are not the backlog policy (overload,
Redis, errors), how far decoding runs behind the stream (lag), the ingest process's CPU, and
latency. N is "sustained" when every stream decodes >= 95% of 25 fps, samples 2 fps (+-10%),
has no unplanned drop, and lags < 1 s.

Latency, two ways (both end at XADD completion, read from the Redis entry id: same host clock):
- decode_to_xadd_ms: from the frame's decode wall time (batch header ``wall``) to XADD;
- server_to_xadd_ms: from the frame's scheduled send time at the RTSP server (the server's
  pipeline clock mapped to wall time at PLAY, plus the frame's pts) to XADD. This includes
  transport, demuxing, decoder delay (B-frame reordering) and the sender.

Prints JSON. Takes about 3 minutes.

    .venv/bin/python bench/rtsp.py [--window 10] [--budget 170]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import psutil
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import private_redis, sample_clip  # noqa: E402
from forensics.streams import Keys  # noqa: E402

FPS_STREAM = 25
FPS_SAMPLE = 2.0
MAX_MOUNTS = 40


class Server:
    """tests/rtsp_server.py serving ``mounts`` mounts of one clip; collects its JSON events."""

    def __init__(self, clip: Path, mounts: int):
        args = [
            "/usr/bin/python3",
            str(ROOT / "tests" / "rtsp_server.py"),
            "--file",
            str(clip),
            "--port",
            "0",
        ]
        for i in range(mounts):
            args += ["--mount", f"/s{i}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.events: queue.Queue = queue.Queue()
        self.plays: dict[str, float] = {}  # mount -> t0 of its latest session
        threading.Thread(target=self._read, daemon=True).start()
        ready = self.events.get(timeout=60)
        self.port = ready["port"]

    def _read(self) -> None:
        with self.proc.stdout:
            for line in self.proc.stdout:
                event = json.loads(line)
                if event["event"] == "play":
                    self.plays[event["mount"]] = event["t0"]
                else:
                    self.events.put(event)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _hashes(r: redis.Redis, keys: Keys, n: int) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in r.hgetall(keys.source(f"s{i}")).items()} for i in range(n)]


def _num(h: dict[str, str], name: str) -> float:
    return float(h.get(name) or 0)


def _busy_cores_total() -> float:
    """CPU seconds the whole machine has spent busy (all processes)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _updated(h: dict[str, str]) -> float:
    return datetime.fromisoformat(h["updated_at"]).timestamp()


def run_step(n: int, server: Server, url: str, window: float, warmup: float, detector: str = "haar") -> dict:
    prefix = f"bench-rtsp-{n}-{detector}"
    keys = Keys(prefix)
    r = redis.Redis.from_url(url)
    env = {**os.environ, "FORENSICS_REDIS__URL": url, "FORENSICS_REDIS__PREFIX": prefix, "FORENSICS_LOG_FORMAT": "json",
           "FORENSICS_LOG_LEVEL": "warning", "FORENSICS_FACES__DETECTOR": detector}  # fmt: skip
    args = [sys.executable, "-m", "forensics.cli", "ingest"]
    for i in range(n):
        args += ["--rtsp", f"s{i}=rtsp://127.0.0.1:{server.port}/s{i}"]
    work = Path(tempfile.mkdtemp(prefix="bench-rtsp-"))
    proc = subprocess.Popen(
        args, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    err_lines: list[str] = []
    threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"ingest exited: {''.join(err_lines)[-2000:]}")
            if all(h.get("state") == "streaming" for h in _hashes(r, keys, n)):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{n} streams did not all start streaming within 30 s")
        time.sleep(warmup)
        ingest_ps, server_ps = psutil.Process(proc.pid), psutil.Process(server.proc.pid)
        cpu0 = (
            sum(ingest_ps.cpu_times()[:2]),
            sum(server_ps.cpu_times()[:2]),
            time.monotonic(),
            _busy_cores_total(),
        )
        t_a, h_a = time.time(), _hashes(r, keys, n)
        time.sleep(window)
        cpu1 = (
            sum(ingest_ps.cpu_times()[:2]),
            sum(server_ps.cpu_times()[:2]),
            time.monotonic(),
            _busy_cores_total(),
        )
        t_b, h_b = time.time(), _hashes(r, keys, n)
        lags = [_num(h, "lag_s") for h in h_b]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    elapsed = cpu1[2] - cpu0[2]
    per = []
    for a, b in zip(h_a, h_b):
        # Counters are as of each hash's updated_at (written every 0.5 s): rates use that span.
        d = {k: _num(b, k) - _num(a, k) for k in ("frames_decoded", "frames_sampled", "frames_sent", "frames_dropped",
                                                   "dropped_backlog", "no_face_frames")}  # fmt: skip
        d["span"] = _updated(b) - _updated(a)
        per.append(d)
    # Latency of the batches added inside the window.
    decode_lat, server_lat = [], []
    for entry_id, fields in r.xrange(keys.frames, min=int(t_a * 1000), max=int(t_b * 1000)):
        xadd = int(entry_id.split(b"-")[0]) / 1000.0
        meta = json.loads(fields[b"meta"])
        decode_lat.append(xadd - meta["wall"][0])
        t0 = server.plays.get(f"/s{meta['source'][1:]}")
        if t0 is not None and meta["pts"][0] is not None:
            server_lat.append(xadd - (t0 + meta["pts"][0]))
    r.delete(keys.frames)
    decoded_fps = [p["frames_decoded"] / p["span"] for p in per]
    sampled_fps = [p["frames_sampled"] / p["span"] for p in per]
    unplanned = int(sum(p["frames_dropped"] - p["dropped_backlog"] for p in per))
    sustained = (
        min(decoded_fps) >= 0.95 * FPS_STREAM
        and all(abs(s - FPS_SAMPLE) <= 0.1 * FPS_SAMPLE for s in sampled_fps)
        and unplanned == 0
        and max(lags) < 1.0
    )
    ingest_cores = (cpu1[0] - cpu0[0]) / elapsed
    server_cores = (cpu1[1] - cpu0[1]) / elapsed
    return {
        "streams": n,
        "detector": detector,
        "sustained": bool(sustained),
        "decoded_fps_per_stream": {"min": round(min(decoded_fps), 2), "max": round(max(decoded_fps), 2)},
        "sampled_fps_per_stream": {"min": round(min(sampled_fps), 2), "max": round(max(sampled_fps), 2)},
        "batches_in_window": len(decode_lat),
        "no_face_frames": int(sum(p["no_face_frames"] for p in per)),
        "unplanned_drops": unplanned,
        "backlog_drops": int(sum(p["dropped_backlog"] for p in per)),
        "lag_s_max": round(max(lags), 3),
        "ingest_cpu_cores": round(ingest_cores, 3),
        "ingest_cpu_per_stream_cores": round(ingest_cores / n, 4),
        "server_cpu_cores": round(server_cores, 3),
        "other_processes_cpu_cores": round((cpu1[3] - cpu0[3]) / elapsed - ingest_cores - server_cores, 3),
        "decode_to_xadd_ms": _percentiles(decode_lat),
        "server_to_xadd_ms": _percentiles(server_lat),
        "ingest_errors": [ln.strip() for ln in err_lines if '"level": "error"' in ln][:3],
    }


def _percentiles(values: list[float]) -> dict | None:
    if not values:
        return None
    ms = np.asarray(values) * 1000
    return {"p50": round(float(np.percentile(ms, 50)), 1), "p99": round(float(np.percentile(ms, 99)), 1),
            "max": round(float(ms.max()), 1), "n": len(values)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=float, default=10.0, help="measurement window per step, seconds")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--budget", type=float, default=170.0, help="stop ramping after this many seconds")
    ap.add_argument("--detector", default="blazeface", help="faces.detector of the ramp (haar, blazeface, ...)")
    args = ap.parse_args()
    t_start = time.monotonic()
    cache = Path(tempfile.gettempdir()) / "forensics-bench"
    cache.mkdir(exist_ok=True)
    clip = sample_clip(cache / "face720p25_4s.mp4", width=1280, height=720, fps=FPS_STREAM, seconds=4.0)
    server = Server(clip, MAX_MOUNTS)
    steps: list[dict] = []
    try:
        with private_redis() as url:

            def step(n: int, detector: str = args.detector) -> dict:
                out = run_step(n, server, url, args.window, args.warmup, detector)
                steps.append(out)
                print(json.dumps({k: out[k] for k in ("streams", "sustained", "ingest_cpu_cores", "lag_s_max",
                                                      "unplanned_drops")}), file=sys.stderr)  # fmt: skip
                return out

            t_step = time.monotonic()
            one = step(1)
            step_cost = time.monotonic() - t_step
            bare = step(1, "none")  # the same without face detection: decoding and sending alone
            haar = step(1, "haar") if args.detector != "haar" else one  # the old default, for reference
            # Capacity guess from one stream's CPU (keeping 15% of the machine for the server and Redis),
            # then: climb from 60% of the guess until a step fails, and bisect between the last good
            # and the first failed count while the time budget lasts.
            guess = max(2, int(0.85 * psutil.cpu_count() / max(one["ingest_cpu_per_stream_cores"], 1e-3)))
            best, worst = (1, None) if one["sustained"] else (0, 1)
            n = max(2, int(guess * 0.6))
            while (
                worst != 1
                and n <= MAX_MOUNTS
                and time.monotonic() - t_start + step_cost * (1 + n / 20) < args.budget
            ):
                if step(n)["sustained"]:
                    best = n
                else:
                    worst = n
                if worst is None:
                    n = best + max(1, guess // 5)
                elif worst - best <= 1:
                    break
                else:
                    n = (best + worst) // 2
    finally:
        server.stop()
    at_max = next(
        (s for s in steps if s["streams"] == best and s["sustained"] and s["detector"] == args.detector), None
    )
    per_stream = one["ingest_cpu_per_stream_cores"] + one["server_cpu_cores"]
    out = {
        "what": "720p 25 fps H.264 RTSP/TCP streams (GStreamer test server, loopback) sampled at 2 fps, one ingest process",
        "machine": {"cpus": psutil.cpu_count(), "python": platform.python_version()},
        "clip": {
            "width": 1280,
            "height": 720,
            "fps": FPS_STREAM,
            "bytes": clip.stat().st_size,
            "seconds_loop": 4.0,
        },
        "ingest": {
            "detector": args.detector,
            "frame_size": 256,
            "decode_threads_per_stream": 1,
            "sample_fps": FPS_SAMPLE,
        },
        "max_streams_sustained": best,
        "first_failed_streams": worst,
        "ingest_cpu_per_stream_cores": at_max["ingest_cpu_per_stream_cores"] if at_max else None,
        "ingest_cpu_per_stream_cores_without_face_detection": bare["ingest_cpu_per_stream_cores"],
        "ingest_cpu_per_stream_cores_one_stream": one["ingest_cpu_per_stream_cores"],
        "ingest_cpu_per_stream_cores_one_stream_haar": haar["ingest_cpu_per_stream_cores"],
        "projected_streams_on_idle_machine_haar": int(
            0.9 * psutil.cpu_count() / (haar["ingest_cpu_per_stream_cores"] + haar["server_cpu_cores"])
        ),
        "other_processes_cpu_cores_during_steps": [s["other_processes_cpu_cores"] for s in steps],
        # CPU seconds per stream hardly depend on contention, so this is what an idle machine would do.
        "projected_streams_on_idle_machine": int(0.9 * psutil.cpu_count() / per_stream),
        "projected_streams_on_idle_machine_without_face_detection": int(
            0.9 * psutil.cpu_count() / (bare["ingest_cpu_per_stream_cores"] + bare["server_cpu_cores"])
        ),
        "decode_to_xadd_ms_at_max": at_max["decode_to_xadd_ms"] if at_max else None,
        "server_to_xadd_ms_at_max": at_max["server_to_xadd_ms"] if at_max else None,
        "note": "the RTSP server runs on the same cores (server_cpu_cores), and so did other users' processes "
        "(other_processes_cpu_cores); latency ends at XADD completion (Redis entry id); server_to_xadd starts "
        "at the frame's scheduled send time on the RTSP server's clock; projected_streams_on_idle_machine = "
        "90% of the cores / (ingest + server CPU of one stream).",
        "steps": steps,
        "bench_seconds": round(time.monotonic() - t_start, 1),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
