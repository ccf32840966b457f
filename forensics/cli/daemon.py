"""Daemon verbs: ``ingest``, ``sources``, ``detect``, ``scan``, ``up``."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from forensics.cli.stop import stop_event
from forensics.config import Settings
from forensics.errors import ConfigError
from forensics.logs import configure_logging
from forensics.redact import redact


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from forensics.redisconn import redis_for
    from workers.ingest import FileIngest
    from workers.live import LiveSupervisor, source_from_spec

    if args.watch:
        settings.ingest.watch_dir = Path(args.watch)
    sources = list(settings.sources)
    for spec in args.rtsp or []:
        src = source_from_spec(spec)
        if any(s.id == src.id for s in sources):
            raise ConfigError(f"--rtsp {spec!r}: source id {src.id!r} is already used")
        sources.append(src)
    settings.sources = sources
    if settings.ingest.watch_dir is None and not sources:
        raise ConfigError(
            "nothing to ingest: give --watch DIR and/or --rtsp ID=URL (or set ingest.watch_dir or sources)"
        )
    stop = stop_event()
    with redis_for(settings) as (r, _url):
        files = FileIngest(settings, r) if settings.ingest.watch_dir is not None else None
        # With a metrics port the supervisor runs even without live sources: it serves /metrics,
        # the health endpoint of containers and probes.
        if not sources and settings.ingest.metrics_port is None:
            files.run(stop)
            return 0
        # Files and every live source run side by side: each live source on its own threads.
        file_thread = threading.Thread(target=files.run, args=(stop,), name="file-ingest") if files else None
        if file_thread is not None:
            file_thread.start()
        try:
            LiveSupervisor(settings, r).run(stop)
        finally:
            stop.set()
            if file_thread is not None:
                file_thread.join()
    return 0


def cmd_sources(args: argparse.Namespace, settings: Settings) -> int:
    from forensics.redisconn import redis_for
    from forensics.sources import source_rows

    with redis_for(settings) as (r, _url):
        rows = source_rows(r, settings)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"no sources under the prefix {settings.redis.prefix!r}")
        return 0
    cols = ["ID", "KIND", "STATE", "DECODED", "SAMPLED", "SENT", "DROPPED", "RECONNECTS", "LAST FRAME", "REASON"]  # fmt: skip
    table = [cols]
    for row in rows:
        last = row.get("last_frame_at")
        age = f"{time.time() - last:.1f}s ago" if isinstance(last, float) else "-"
        table.append([
            row["id"], str(row.get("kind", "-")), str(row.get("state", "-")),
            *(str(row.get(k, "-")) for k in ("frames_decoded", "frames_sampled", "frames_sent", "frames_dropped",
                                              "reconnects")),
            age, str(row.get("reason") or "-") if row.get("state") != "streaming" else "-",
        ])  # fmt: skip
    widths = [max(len(line[i]) for line in table) for i in range(len(cols) - 1)]
    for line in table:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)) + "  " + line[-1])
    return 0


def cmd_detect(args: argparse.Namespace, settings: Settings) -> int:
    from forensics import metrics as metrics_mod
    from forensics.redisconn import redis_for
    from workers.detect import DetectWorker

    stop = stop_event()
    with redis_for(settings) as (r, _url):
        worker = DetectWorker(settings, r, consumer=args.consumer)
        worker.load_initial()
        if settings.detect.metrics_port is not None:
            worker.metrics = metrics_mod.DetectMetrics()
            worker.metrics.set_model(worker.model.artifact.version)
            metrics_mod.serve(settings.detect.metrics_port, worker.metrics,
                              lambda: {"model": worker.model.artifact.version, **worker.stats})  # fmt: skip
        worker.run(stop)
    return 0


def cmd_scan(args: argparse.Namespace, settings: Settings) -> int:
    from forensics.errors import BadVideo
    from forensics.model import load_model
    from forensics.registry import Registry
    from forensics.scan import scan_file

    if not args.log_level:  # scan's output is its verdict lines and one line per error, not progress logs
        configure_logging("scan", "warning", settings.log_format)
    model = load_model(Registry(settings.models_dir), args.model, providers=settings.detect.providers)
    if model.warning:
        print(f"forensics: warning: {model.warning}", file=sys.stderr)
    status = 0
    for path in args.files:
        try:
            verdict = scan_file(path, settings, model, full_scores=args.full_scores)
        except BadVideo as err:
            print(f"forensics: error: {err}", file=sys.stderr)
            status = 1
            continue
        except FileNotFoundError:
            print(f"forensics: error: {path}: no such file", file=sys.stderr)
            status = 1
            continue
        if args.json:
            print(json.dumps({"path": str(path), **verdict}))
        else:
            score = "-" if verdict["score"] is None else f"{verdict['score']:.3f}"
            flag = "  [synthetic-only model]" if model.warning else ""
            print(f"{path}: {verdict['label']}  score={score} (threshold {verdict['threshold']:.3f})  "
                  f"faces={verdict['faces_scored']} frames={verdict['frames_scored']}  "
                  f"anomaly_rate={_rate(verdict['anomaly_rate'])} low_quality_rate={_rate(verdict.get('low_quality_rate'))}"
                  f"{flag}")  # fmt: skip
    return status


def _rate(v: float | None) -> float | None:
    return v if v is None else round(v, 3)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from forensics.supervisor import Supervisor

    roles: list[tuple[str, list[str]]] = []
    if settings.ingest.watch_dir is not None or settings.sources or args.watch:
        roles.append(("ingest", ["ingest"] + (["--watch", str(args.watch)] if args.watch else [])))
    roles += [(f"detect-{i}", ["detect"]) for i in range(args.detect_workers)]
    if not args.no_web:
        from forensics.web.access import check_bind

        check_bind(settings.web)  # one line now, not a role that keeps failing
        roles.append(("web", ["web"]))
    sup = Supervisor(settings, roles, config=args.config, max_restarts=args.max_restarts)
    url = sup.start()
    print(f"forensics up: {', '.join(n for n, _ in roles)} on {redact(url)}", flush=True)
    sup.watch(stop_event())
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("ingest", help="put frame batches on Redis from dropped video files and live RTSP streams")
    s.add_argument("--watch", metavar="DIR", help="folder to watch (default: ingest.watch_dir)")
    s.add_argument(
        "--rtsp", action="append", metavar="ID=URL", help="a live source, repeatable; added to the configured `sources`"
    )
    s.set_defaults(func=cmd_ingest, role="ingest")

    s = sub.add_parser("sources", help="each source's state and counters, from Redis")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_sources, role="sources")

    s = sub.add_parser("detect", help="score frame batches from Redis; publish results, verdicts and alerts")
    s.add_argument("--consumer", help="consumer name in the group (default: host-pid)")
    s.set_defaults(func=cmd_detect, role="detect")

    s = sub.add_parser("scan", help="one-shot verdicts for video files, in this process, without Redis")
    s.add_argument("files", nargs="+", type=Path)
    s.add_argument("--json", action="store_true", help="one JSON object per file")
    s.add_argument("--full-scores", action="store_true",
                   help="scores at full precision whatever alerts.scores says (the operator holds the model anyway)")
    s.add_argument("--model", help="model version (default: current)")
    s.set_defaults(func=cmd_scan, role="scan")

    s = sub.add_parser("up", help="run ingest, detect and the console (and an embedded Redis) as supervised local processes")
    s.add_argument("--watch", type=Path, metavar="DIR", help="folder to watch (default: ingest.watch_dir)")
    s.add_argument("--detect-workers", type=int, default=1)
    s.add_argument("--max-restarts", type=int, default=5, help="per role within a minute, then give up")
    s.add_argument("--no-web", action="store_true", help="do not start the console (forensics web)")
    s.set_defaults(func=cmd_up, role="supervisor")
