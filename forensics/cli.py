"""The ``forensics`` command. Each subcommand is a small function; heavy imports happen inside it,
so ``forensics --help`` and the workers never import torch.

User errors (ForensicsError) end in one line on stderr and exit status 2; programming errors
keep their traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

from forensics import __version__
from forensics.config import Settings, load_settings
from forensics.errors import ConfigError, ForensicsError
from forensics.logs import configure_logging
from forensics.redact import redact

Handler = Callable[[argparse.Namespace, Settings], int]


def _stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for clean shutdown of worker loops."""
    stop = threading.Event()

    def _handler(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop


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
    stop = _stop_event()
    with redis_for(settings) as (r, _url):
        files = FileIngest(settings, r) if settings.ingest.watch_dir is not None else None
        if not sources:
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
    import time

    from forensics.redisconn import redis_for
    from workers.live import source_rows

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

    stop = _stop_event()
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
    status = 0
    for path in args.files:
        try:
            verdict = scan_file(path, settings, model)
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
            print(f"{path}: {verdict['label']}  score={score} (threshold {verdict['threshold']:.3f})  "
                  f"faces={verdict['faces_scored']} frames={verdict['frames_scored']}  "
                  f"anomaly_rate={verdict['anomaly_rate'] if verdict['anomaly_rate'] is None else round(verdict['anomaly_rate'], 3)}")  # fmt: skip
    return status


def format_alert(event: dict) -> str:
    """One readable line for an alert."""
    kind, src = event.get("kind"), event.get("source")
    if kind == "verdict":
        score = event.get("score")
        score = "-" if score is None else f"{score:.3f}"
        return (f"[verdict] {event.get('file') or src}: {event.get('label')}  score={score} "
                f"faces={event.get('faces_scored')} anomaly_rate={event.get('anomaly_rate')}")  # fmt: skip
    if kind == "deepfake":
        return f"[deepfake] {src}: window score {event.get('score', 0):.3f} > {event.get('threshold', 0):.3f}"
    if kind == "anomaly":
        return f"[anomaly] {src}: anomaly rate {event.get('anomaly_rate', 0):.2f}"
    if kind == "source":
        return f"[source] {src}: {event.get('state')} {event.get('reason') or ''}".rstrip()
    return json.dumps(event)


def cmd_alerts(args: argparse.Namespace, settings: Settings) -> int:
    from forensics.alerts import follow_alerts
    from forensics.redisconn import redis_for
    from forensics.streams import Keys

    stop = _stop_event()
    pretty = sys.stdout.isatty() and not args.json
    with redis_for(settings) as (r, _url):
        seen = 0
        for _id, event in follow_alerts(r, Keys(settings.redis.prefix), since=args.since or "$", until=stop.is_set):
            if args.kind and event["kind"] not in args.kind:
                continue
            print(format_alert(event) if pretty else json.dumps(event), flush=True)
            seen += 1
            if args.count and seen >= args.count:
                break
    return 0


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from forensics.supervisor import Supervisor

    roles: list[tuple[str, list[str]]] = []
    if settings.ingest.watch_dir is not None or settings.sources or args.watch:
        roles.append(("ingest", ["ingest"] + (["--watch", str(args.watch)] if args.watch else [])))
    roles += [(f"detect-{i}", ["detect"]) for i in range(args.detect_workers)]
    sup = Supervisor(settings, roles, config=args.config, max_restarts=args.max_restarts)
    url = sup.start()
    print(f"forensics up: {', '.join(n for n, _ in roles)} on {redact(url)}", flush=True)
    sup.watch(_stop_event())
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from forensics.demo import run_demo

    return run_demo(settings, videos=args.videos, samples=args.samples, config=args.config)


def cmd_synth(args: argparse.Namespace, settings: Settings) -> int:
    from trainer.synth import generate_dataset

    out = generate_dataset(
        args.out,
        args.videos,
        seed=args.seed,
        width=args.width,
        height=args.height,
        fps=args.fps,
        seconds=args.seconds,
        difficulty=args.difficulty,
        parts=args.parts,
    )
    print(out)
    return 0


def _pixel_eps(text: str) -> float:
    """'4/255' or '0.0157' -> float."""
    try:
        if "/" in text:
            a, b = text.split("/", 1)
            return float(a) / float(b)
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a radius like 4/255 or 0.0157") from None


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from trainer.train import TrainConfig, train

    cfg = TrainConfig(
        data=[str(d) for d in args.data],
        image_size=args.size,
        frames_per_video=args.frames,
        gan_epochs=args.gan_epochs,
        adv_epochs=args.adv_epochs,
        batch_size=args.batch_size,
        adv_mode=args.adv_mode,
        eps=args.eps,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        resume=args.resume,
        promote=args.promote,
        evaluate=not args.no_eval,
        progress=not args.no_progress,
        run_dir=str(settings.state_dir / "train"),
        cache_dir=str(settings.state_dir / "crops"),
        models_dir=str(settings.models_dir),
    )
    out = train(cfg)
    if out:
        adv = out["metrics"]["adversarially_trained"]
        summary = {
            "version": out["version"],
            "promoted": out["promoted"],
            "clean_video_auc": adv["clean_video_auc"],
            "clean_frame_auc": adv["clean_frame_auc"],
            "pgd_success": {k: v["success_rate"] for k, v in adv["pgd"].items()},
            "standard_pgd_success": {k: v["success_rate"] for k, v in out["metrics"]["standard"]["pgd"].items()},
            "ood_detection": out["metrics"]["ood_detection"],
            "anomaly_on_pgd": adv.get("anomaly_on_pgd"),
        }
        print(json.dumps(summary, indent=1))
    return 0


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from trainer.evaluate import evaluate, summary

    models = Path(args.models) if args.models else settings.models_dir
    out = Path(args.out) if args.out else models / args.model / "report" / "eval"
    extra = {k: getattr(args, k) for k in ("blackbox_images", "blackbox_queries") if getattr(args, k) is not None}
    result = evaluate(
        models, args.model, [str(d) for d in args.data], out_dir=out, seed=args.seed, max_fakes=args.max_fakes,
        quick=args.quick, cache_dir=args.cache or str(settings.state_dir / "crops"), **extra,
    )  # fmt: skip
    print(json.dumps(summary(result), indent=1, default=str))
    return 0


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    """Saliency figure for one alert: its evidence crop from Redis, the alert's model version."""
    from forensics.alerts import decode_crop_png, evidence_png, find_alert
    from forensics.redisconn import redis_for
    from forensics.registry import Registry
    from forensics.streams import Keys

    try:
        from trainer.models import load_discriminator
        from trainer.saliency import explain_crop, saliency_figure
    except ImportError as err:
        raise ConfigError(f"explain needs the trainer's packages ({err.name}): pip install 'video-forensics[train]'") from None
    keys = Keys(settings.redis.prefix)
    with redis_for(settings) as (r, _url):
        alert = find_alert(r, keys, args.alert_id)
        png = evidence_png(r, keys, alert)
    crop = decode_crop_png(png)
    if crop is None:
        raise ConfigError(f"the evidence crop of alert {args.alert_id!r} is not a readable PNG")
    model_info = alert.get("model") or {}
    reg = Registry(Path(args.models) if args.models else settings.models_dir)
    art = reg.load(model_info.get("version"))  # verifies every file's sha256
    if model_info.get("sha256") and model_info["sha256"] != art.sha256:
        raise ConfigError(f"model {art.version} in {reg.root} is not the one that raised alert {args.alert_id!r}")
    if not (art.path / "discriminator.pt").exists():
        raise ConfigError(f"model {art.version} has no torch weights (discriminator.pt) to explain with")
    model = load_discriminator(art.path / "discriminator.pt")
    ex = explain_crop(model, crop, margin=settings.faces.margin)
    safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in args.alert_id)
    out = Path(args.out) if args.out else Path(f"explain-{safe_id}.png")
    ev = alert["evidence"]
    saliency_figure(crop, ex, out, title=f"{alert['kind']} {args.alert_id} · {alert['source']} frame {ev['frame']} · "
                    f"model {art.version}")  # fmt: skip
    print(json.dumps({
        "alert_id": args.alert_id, "kind": alert["kind"], "source": alert["source"], "model": art.version,
        "frame": ev["frame"], "box": ev.get("box"), "fake_prob_alert": ev.get("fake_prob"),
        "fake_prob_torch": ex["fake_prob"], "regions_input_gradient": ex["regions_input_gradient"],
        "regions_grad_cam": ex["regions_grad_cam"], "figure": str(out),
    }, indent=1))  # fmt: skip
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from forensics.registry import Registry

    reg = Registry(settings.models_dir)
    if args.action == "list":
        rows = reg.describe()
        if args.json:
            print(json.dumps(rows, indent=1))
        elif not rows:
            print(f"no models in {reg.root}")
        for row in rows if not args.json else []:
            mark = "*" if row["current"] else " "
            auc = f"{row['auc']:.3f}" if isinstance(row["auc"], float) else "-"
            print(f"{mark} {row['version']}  {row['created_at']}  size={row['input_size']}  "
                  f"video_auc={auc}  parent={row['parent'] or '-'}")  # fmt: skip
            for d in row["decisions"]:
                print(f"      retrain {d['run_id']}: {d['decision']} ({d['reason']})")
            for h in row["promotions"]:
                print(f"      promoted {h['at']}: {h['reason']}")
    elif args.action == "verify":
        art = reg.load(args.version)
        print(f"{art.version}: {len(art.manifest['files'])} files match the manifest")
    elif args.action in ("promote", "rollback"):
        from forensics.announce import promote_announced, rollback_announced
        from forensics.redisconn import redis_for
        from forensics.streams import Keys

        # Detect workers follow the announcement on Redis, so a change on disk alone is not enough.
        with redis_for(settings) as (r, _url):
            keys = Keys(settings.redis.prefix)
            if args.action == "promote":
                art = promote_announced(reg, r, keys, args.version, reason="manual")
            else:
                art = rollback_announced(reg, r, keys)
        print(f"current -> {art.version} (announced on {keys.model})")
    return 0


def cmd_label(args: argparse.Namespace, settings: Settings) -> int:
    from forensics.labels import record_label
    from forensics.redisconn import redis_for
    from forensics.streams import Keys

    with redis_for(settings) as (r, _url):
        rec = record_label(r, Keys(settings.redis.prefix), args.alert_id, args.label, by=args.by,
                           crop_ttl_s=settings.retrain.label_crop_ttl_s)  # fmt: skip
    crops = f"{rec['crops']} crop(s) kept for retraining" if rec["crops"] else "its crop has expired: not usable for training"
    print(f"{args.alert_id}: labelled {rec['label']} by {rec['by']} ({rec['kind']} on {rec['source']}); {crops}")
    return 0


def _print_run(record: dict) -> None:
    screen = record.get("screen", {})
    gate = record.get("gate", {})
    summary = {
        "run_id": record["run_id"], "decision": record["decision"], "reason": record.get("reason"),
        "current": record.get("current"), "candidate": record.get("candidate"),
        "screen": {k: screen.get(k) for k in ("samples_in", "accepted", "quarantined", "capped")},
        "gate": {m: {k: gate[m].get(k) for k in ("clean_frame_auc", "attack_success_rate")}
                 for m in ("current", "candidate") if m in gate},
    }  # fmt: skip
    print(json.dumps(summary, indent=1, default=str))


def cmd_retrain(args: argparse.Namespace, settings: Settings) -> int:
    if not args.now:
        raise ConfigError("retraining runs on a schedule with `forensics trainer`; add --now for one run now")
    from forensics.redisconn import redis_for
    from trainer.retrain import run_retrain

    with redis_for(settings) as (r, _url):
        _print_run(run_retrain(settings, r, trigger="manual"))
    return 0


def cmd_trainer(args: argparse.Namespace, settings: Settings) -> int:
    from forensics.redisconn import redis_for
    from trainer.schedule import Scheduler

    stop = _stop_event()
    with redis_for(settings) as (r, _url):
        Scheduler(settings, r).run(stop)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="forensics", description="Streaming video forensics daemon.")
    p.add_argument("--version", action="version", version=f"forensics {__version__}")
    p.add_argument("--config", metavar="TOML", help="settings file (TOML); env FORENSICS_* overrides it")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

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
    s.add_argument("--model", help="model version (default: current)")
    s.set_defaults(func=cmd_scan, role="scan")

    s = sub.add_parser("alerts", help="follow the alerts stream")
    asub = s.add_subparsers(dest="action", metavar="ACTION")
    asub.required = True
    a = asub.add_parser("tail", help="print alerts as they arrive (pretty on a terminal, JSON lines otherwise)")
    a.add_argument("--json", action="store_true")
    a.add_argument("--kind", action="append", choices=["verdict", "deepfake", "anomaly", "source"])
    a.add_argument("--since", metavar="ID", help="start after this stream id (0 = from the beginning; default: now)")
    a.add_argument("--count", type=int, default=0, help="exit after this many alerts")
    s.set_defaults(func=cmd_alerts, role="alerts")

    s = sub.add_parser("up", help="run ingest and detect (and an embedded Redis) as supervised local processes")
    s.add_argument("--watch", type=Path, metavar="DIR", help="folder to watch (default: ingest.watch_dir)")
    s.add_argument("--detect-workers", type=int, default=1)
    s.add_argument("--max-restarts", type=int, default=5, help="per role within a minute, then give up")
    s.set_defaults(func=cmd_up, role="supervisor")

    s = sub.add_parser("demo", help="generate data, train a small model, run the daemon on sample videos")
    s.add_argument("--videos", type=int, default=240, help="synthetic training videos")
    s.add_argument("--samples", type=int, default=6, help="sample videos dropped into the watch folder")
    s.set_defaults(func=cmd_demo, role="demo")

    s = sub.add_parser("synth", help="write a synthetic DFDC-format dataset (REAL clips and face-swapped FAKEs)")
    s.add_argument("--out", required=True, type=Path, metavar="DIR")
    s.add_argument("--videos", type=int, default=8, help="total clips, REAL and FAKE")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--width", type=int, default=320)
    s.add_argument("--height", type=int, default=240)
    s.add_argument("--fps", type=int, default=15)
    s.add_argument("--seconds", type=float, default=2.0)
    s.add_argument("--difficulty", type=float, default=0.5, help="0 obvious swaps .. 1 subtle swaps")
    s.add_argument("--parts", type=int, default=1, help="number of dfdc_train_part_K folders")
    s.set_defaults(func=cmd_synth, role="synth")

    s = sub.add_parser("train", help="train, calibrate, export and register a model from DFDC-format data")
    s.add_argument("--data", required=True, action="append", type=Path, metavar="DIR", help="repeatable")
    s.add_argument("--size", type=int, default=64, help="input size S (64, 128, 256)")
    s.add_argument("--frames", type=int, default=16, help="face crops taken from this many frames per video")
    s.add_argument("--gan-epochs", type=int, default=8)
    s.add_argument("--adv-epochs", type=int, default=6)
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--adv-mode", choices=["pgd", "fgsm"], default="pgd", help="fgsm: FGSM with random start (cheap)")
    s.add_argument("--eps", type=_pixel_eps, default=6 / 255, help="final adversarial training radius, e.g. 6/255")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    s.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    s.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    s.add_argument("--promote", action="store_true", help="promote the new version (the first one always is)")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--no-eval", action="store_true", help="skip the quick robustness report at the end")
    s.set_defaults(func=cmd_train, role="trainer")

    s = sub.add_parser("eval", help="robustness evaluation of a model version on its held-out test split (report)")
    s.add_argument("--model", required=True, metavar="VERSION")
    s.add_argument("--data", required=True, action="append", type=Path, metavar="DIR", help="repeatable")
    s.add_argument("--out", metavar="DIR", help="default: <models>/<version>/report/eval/")
    s.add_argument("--models", metavar="DIR", help="model registry (default: from settings)")
    s.add_argument("--cache", metavar="DIR", help="face crop cache (default: <state_dir>/crops)")
    s.add_argument("--quick", action="store_true", help="small subsets: fewer fakes, queries and OOD crops")
    s.add_argument("--max-fakes", type=int, default=200, help="correctly detected test fakes attacked")
    s.add_argument("--blackbox-images", type=int, help="images for the black-box attack")
    s.add_argument("--blackbox-queries", type=int, help="query budget per image for the black-box attack")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_eval, role="eval")

    s = sub.add_parser("explain", help="saliency figure (input gradients, Grad-CAM) of an alert's evidence crop")
    s.add_argument("alert_id", metavar="ALERT_ID")
    s.add_argument("--out", metavar="PNG", help="default: ./explain-<ALERT_ID>.png")
    s.add_argument("--models", metavar="DIR", help="model registry (default: from settings)")
    s.set_defaults(func=cmd_explain, role="explain")

    s = sub.add_parser("models", help="list, verify, promote or roll back model versions")
    msub = s.add_subparsers(dest="action", metavar="ACTION")
    msub.required = True
    m = msub.add_parser("list", help="versions, lineage, the current one marked *")
    m.add_argument("--json", action="store_true")
    m = msub.add_parser("verify", help="check every file of a version against its manifest")
    m.add_argument("version", nargs="?")
    m = msub.add_parser("promote", help="make VERSION current (atomically) and announce it to detect workers")
    m.add_argument("version")
    msub.add_parser("rollback", help="return to the version current before this one, and announce it")
    s.set_defaults(func=cmd_models, role="models")

    s = sub.add_parser("label", help="record an analyst's verdict on an alert (its crop becomes training data)")
    s.add_argument("alert_id", metavar="ALERT_ID")
    s.add_argument("label", choices=["real", "fake"])
    s.add_argument("--by", metavar="NAME", help="who decided (default: the login name)")
    s.set_defaults(func=cmd_label, role="label")

    s = sub.add_parser("retrain", help="one retraining run: intake, poisoning screen, candidate, gate")
    s.add_argument("--now", action="store_true", help="run now (the schedule is `forensics trainer`)")
    s.set_defaults(func=cmd_retrain, role="trainer")

    s = sub.add_parser("trainer", help="scheduled retraining (retrain.interval_s or retrain.cron)")
    s.set_defaults(func=cmd_trainer, role="trainer")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        if args.log_level:
            settings.log_level = args.log_level
        configure_logging(args.role, settings.log_level, settings.log_format)
        return args.func(args, settings)
    except ForensicsError as err:
        print(f"forensics: error: {redact(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
