"""Prometheus metrics of the detect worker, and the metrics HTTP server of every role that serves them.

``GET /metrics``: Prometheus text format; ``GET /healthz``: JSON with the model version, the
seconds since the loop last turned, and ``ok`` (200) or not (503) when the loop is stuck.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


class DetectMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.batches = Counter("forensics_detect_batches", "Frame batches scored", registry=r)
        self.faces = Counter("forensics_detect_faces", "Face crops scored", registry=r)
        self.alerts = Counter("forensics_detect_alerts", "Alerts published", ["kind"], registry=r)
        self.inference = Histogram(
            "forensics_detect_inference_seconds", "Model + scorer time per model call", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )  # fmt: skip
        self.backlog = Gauge("forensics_detect_backlog", "Unacknowledged entries on the frames stream", registry=r)
        self.model = Gauge("forensics_detect_model_info", "Model being served", ["version"], registry=r)
        self.heartbeat = time.monotonic()

    def batch(self, faces: int) -> None:
        self.batches.inc()
        self.faces.inc(faces)

    def alert(self, kind: str) -> None:
        self.alerts.labels(kind=kind).inc()

    def observe_inference(self, seconds: float, images: int) -> None:
        self.inference.observe(seconds)

    def set_model(self, version: str) -> None:
        self.model.clear()
        self.model.labels(version=version).set(1)


def serve(port: int, metrics: DetectMetrics | CollectorRegistry, health: Callable[[], dict] | None = None, *,
          stuck_after_s: float = 60.0) -> ThreadingHTTPServer:  # fmt: skip
    """The one metrics HTTP server (detect workers and live ingest): ``GET /metrics`` from ``metrics``
    (a DetectMetrics or any prometheus registry); with ``health``, ``GET /healthz`` as well (needs a
    DetectMetrics, whose heartbeat says whether the loop is stuck). Runs on a daemon thread; returns
    the server (``.server_port``; stop it with ``.shutdown()`` then ``.server_close()``). Port 0: any free port.
    """
    registry = metrics if isinstance(metrics, CollectorRegistry) else metrics.registry

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/metrics"):
                body, ctype, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
            elif self.path.startswith("/healthz") and health is not None:
                state = health()
                state["loop_age_s"] = time.monotonic() - metrics.heartbeat
                state["ok"] = state["loop_age_s"] < stuck_after_s and state.get("model") is not None
                body, ctype, code = json.dumps(state).encode(), "application/json", 200 if state["ok"] else 503
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet: scrapes are not log events
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server
