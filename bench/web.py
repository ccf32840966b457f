"""Console benchmark (prints JSON): page load with 200 alerts, XADD -> appearance latency, SSE fan-out.

Everything runs on loopback: a private redis-server, `forensics web` as its own process, headless
Chromium (Debian's, via Selenium) for what a page shows, httpx for raw SSE clients. Loops are bounded.

- ``page_load``: the Overview and Live alerts pages with 200 alerts in the stream, navigation start
  to content rendered (p50 over ``--loads``), next to the raw Redis reads they need (reference);
- ``xadd_to_page``: alert XADD (AlertWriter.emit) to its card in the DOM of an open Live alerts page,
  p50/p99 over ``--alerts`` alerts, next to the same alerts' arrival at a bare SSE client (reference);
- ``fanout``: 50 SSE clients connected, ``--alerts`` alerts published: per-delivery latency and the web
  process's RSS and CPU, next to 1 client (reference).

Run: ``nice -n 10 .venv/bin/python bench/web.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import redis

from bench.common import private_redis
from forensics.alerts import AlertWriter, encode_crop_png, evidence_field, make_alert
from forensics.streams import Keys
from forensics.web.server import wait_for_console

PREFIX = "bench"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def summary_ms(values_s: list[float]) -> dict:
    ms = [v * 1000 for v in values_s]
    return {"n": len(ms), "p50_ms": round(pct(ms, 50), 2), "p99_ms": round(pct(ms, 99), 2),
            "max_ms": round(max(ms), 2) if ms else None}  # fmt: skip


def emit(r: redis.Redis, keys: Keys, i: int, tag: str) -> tuple[str, float]:
    """One verdict alert with an evidence crop, as detect writes it; returns (alert id, XADD wall time)."""
    source = f"{tag}-file{i:04d}"
    crop = np.full((64, 64, 3), (i * 37) % 255, np.uint8)
    r.hset(keys.evidence(source), evidence_field(0, 0), encode_crop_png(crop))
    alert = make_alert("verdict", source, f"{source}:verdict", model={"version": "v0001", "sha256": "0" * 64},
                       file=f"{source}.mp4", label="FAKE" if i % 2 else "REAL", score=0.4 + (i % 5) / 10,
                       threshold=0.5, anomaly_rate=0.0, anomalous_tracks=0, frames_scored=10, faces_scored=10,
                       tracks={}, evidence={"frame": 0, "pts": 0.0, "box": [0, 0, 64, 64], "track": 0,
                                            "fake_prob": 0.5, "mahalanobis": 1.0, "mahalanobis_threshold": 2.0,
                                            "anomalous": False})  # fmt: skip
    t = time.time()
    AlertWriter(r, keys).emit(alert)
    return alert["alert_id"], t


def start_web(redis_url: str, work: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FORENSICS_REDIS__URL": redis_url, "FORENSICS_REDIS__PREFIX": PREFIX,
           "FORENSICS_MODELS_DIR": str(work / "models"), "FORENSICS_STATE_DIR": str(work / "state"),
           "FORENSICS_WEB__PORT": str(port), "FORENSICS_LOG_FORMAT": "json"}  # fmt: skip
    with open(work / "web.log", "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "forensics.cli", "web"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    if not wait_for_console(url, 60):
        proc.kill()
        raise SystemExit(f"forensics web did not start: {(work / 'web.log').read_text()[-1000:]}")
    return proc, url


class SSEClient(threading.Thread):
    """A bare SSE client: records (alert id, receive wall time) for every alert event."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.got: dict[str, float] = {}
        self.connected = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(5, read=None)) as c, c.stream("GET", self.url) as res:
            event = None
            for line in res.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                    if event == "status":
                        self.connected.set()
                elif line.startswith("data:") and event == "alert":
                    self.got[json.loads(line[5:])["alert_id"]] = time.time()
                if self.stop.is_set():
                    return


def page_load(driver, url: str, loads: int) -> dict:
    out = {}
    probes = {
        "overview": ("", "document.getElementById('alert-counts').textContent.includes('200 alerts')"),
        "alerts": ("alerts", "document.querySelectorAll('article.alert').length >= 50"),
    }
    for name, (path, ready) in probes.items():
        times = []
        for _ in range(loads):
            driver.get("about:blank")
            driver.get(url + path)
            deadline = time.monotonic() + 30
            while not driver.execute_script(f"return {ready}"):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} page did not render")
                time.sleep(0.005)
            times.append(driver.execute_script("return performance.now()") / 1000)
        out[name] = summary_ms(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=100, help="alerts published per latency measurement")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--loads", type=int, default=10)
    ap.add_argument("--interval", type=float, default=0.05, help="seconds between published alerts")
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-web-"))
    result: dict = {"machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}}
    with private_redis() as url:
        r = redis.Redis.from_url(url)
        keys = Keys(PREFIX)
        for i in range(200):
            emit(r, keys, i, "seed")
        proc, base = start_web(url, work)
        web = psutil.Process(proc.pid)
        try:
            # Reference: the Redis reads behind the overview, in this process.
            t_ref = []
            for _ in range(args.loads):
                t0 = time.perf_counter()
                [json.loads(f[b"event"]) for _i, f in r.xrevrange(keys.alerts, count=200)]
                r.xrevrange(keys.alerts, count=50)
                t_ref.append(time.perf_counter() - t0)
            api = []
            with httpx.Client() as c:
                for _ in range(args.loads):
                    t0 = time.perf_counter()
                    c.get(base).raise_for_status()
                    c.get(base + "api/overview").raise_for_status()
                    c.get(base + "api/alerts?limit=50").raise_for_status()
                    api.append(time.perf_counter() - t0)
            result["page_load"] = {"alerts_in_stream": 200, "http_page_plus_api": summary_ms(api),
                                   "reference_redis_reads": summary_ms(t_ref)}  # fmt: skip

            if not args.no_browser:
                sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
                from tests.browser import chromium

                with chromium() as driver:
                    result["page_load"]["browser"] = page_load(driver, base, args.loads)
                    driver.get(base + "alerts")
                    t_end = time.monotonic() + 30
                    while driver.execute_script("return document.getElementById('live').textContent") != "live":
                        if time.monotonic() > t_end:
                            raise SystemExit("alerts page did not connect")
                        time.sleep(0.05)
                    driver.execute_script("""
                        window.__seen = {};
                        new MutationObserver((ms) => { for (const m of ms) for (const n of m.addedNodes)
                          if (n.dataset && n.dataset.alertId) window.__seen[n.dataset.alertId] = Date.now(); })
                          .observe(document.getElementById('feed'), { childList: true });""")
                    ref = SSEClient(base + "api/alerts/stream")
                    ref.start()
                    ref.connected.wait(10)
                    sent = {}
                    for i in range(args.alerts):
                        aid, t = emit(r, keys, i, "lat")
                        sent[aid] = t
                        time.sleep(args.interval)
                    time.sleep(1.0)
                    seen = driver.execute_script("return window.__seen")
                    ref.stop.set()
                    lat = [seen[a] / 1000 - t for a, t in sent.items() if a in seen]
                    sse = [ref.got[a] - t for a, t in sent.items() if a in ref.got]
                    result["xadd_to_page"] = {**summary_ms(lat), "missing": len(sent) - len(lat),
                                              "reference_bare_sse_client": summary_ms(sse)}  # fmt: skip

            def fanout(n_clients: int, tag: str) -> dict:
                web.cpu_percent(None)
                rss0 = web.memory_info().rss
                clients = [SSEClient(base + "api/alerts/stream") for _ in range(n_clients)]
                for c in clients:
                    c.start()
                for c in clients:
                    c.connected.wait(20)
                time.sleep(0.5)
                rss_connected = web.memory_info().rss
                cpu0, t0 = sum(web.cpu_times()[:2]), time.monotonic()
                sent = {}
                for i in range(args.alerts):
                    aid, t = emit(r, keys, i, tag)
                    sent[aid] = t
                    time.sleep(args.interval)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and any(len(c.got) < len(sent) for c in clients):
                    time.sleep(0.05)
                cpu1, t1 = sum(web.cpu_times()[:2]), time.monotonic()
                lat = [c.got[a] - t for c in clients for a, t in sent.items() if a in c.got]
                out = {
                    "clients": n_clients, "alerts": len(sent), "deliveries": len(lat),
                    "missing": n_clients * len(sent) - len(lat), **summary_ms(lat),
                    "web_rss_mb_before": round(rss0 / 2**20, 1), "web_rss_mb_connected": round(rss_connected / 2**20, 1),
                    "web_rss_mb_after": round(web.memory_info().rss / 2**20, 1),
                    "web_cpu_s": round(cpu1 - cpu0, 3), "web_cpu_share_of_one_core": round((cpu1 - cpu0) / (t1 - t0), 3),
                }  # fmt: skip
                for c in clients:
                    c.stop.set()
                return out

            result["fanout"] = {"reference_1_client": fanout(1, "one"), f"clients_{args.clients}": fanout(args.clients, "many")}
        finally:
            proc.terminate()
            proc.wait(15)
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
