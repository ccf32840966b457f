"""Model and alert verbs: ``alerts tail``, ``explain``, ``models``, ``label``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from forensics.cli.stop import stop_event
from forensics.config import Settings


def format_alert(event: dict) -> str:
    """One readable line for an alert."""
    kind, src = event.get("kind"), event.get("source")
    if kind == "verdict":
        score = event.get("score")
        score = "-" if score is None else f"{score:.3f}"
        flag = "  [synthetic-only model: not meaningful on real video]" if (event.get("model") or {}).get("synthetic_only") else ""
        return (f"[verdict] {event.get('file') or src}: {event.get('label')}  score={score} "
                f"faces={event.get('faces_scored')} anomaly_rate={event.get('anomaly_rate')} "
                f"low_quality_rate={event.get('low_quality_rate')}{flag}")  # fmt: skip
    if kind == "deepfake":
        score = event.get("score")  # null when published under alerts.scores = label
        score = "over" if score is None else f"{score:.3f} >"
        return f"[deepfake] {src}: window score {score} {event.get('threshold', 0):.3f}"
    if kind == "anomaly":
        return f"[anomaly] {src}: anomaly rate {event.get('anomaly_rate', 0):.2f}"
    if kind == "source":
        return f"[source] {src}: {event.get('state')} {event.get('reason') or ''}".rstrip()
    return json.dumps(event)


def cmd_alerts(args: argparse.Namespace, settings: Settings) -> int:
    from forensics.alerts import follow_alerts
    from forensics.redisconn import redis_for
    from forensics.streams import Keys

    stop = stop_event()
    pretty = sys.stdout.isatty() and not args.json
    with redis_for(settings) as (r, _url):
        seen = 0
        for _id, event in follow_alerts(r, Keys.for_settings(settings), since=args.since or "$", until=stop.is_set):
            if args.kind and event["kind"] not in args.kind:
                continue
            print(format_alert(event) if pretty else json.dumps(event), flush=True)
            seen += 1
            if args.count and seen >= args.count:
                break
    return 0


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    """Saliency figure for one alert: its evidence crop from Redis, the alert's model version."""
    from forensics.redisconn import redis_for
    from forensics.registry import Registry
    from forensics.streams import Keys
    from trainer.explain import explain_alert

    reg = Registry(Path(args.models) if args.models else settings.models_dir)
    with redis_for(settings) as (r, _url):
        out = explain_alert(r, Keys.for_settings(settings), reg, args.alert_id, margin=settings.faces.margin,
                            out=Path(args.out) if args.out else None)  # fmt: skip
    print(json.dumps(out, indent=1))
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from forensics.provenance import summary as provenance_summary
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
            print(f"      trained on: {provenance_summary(row['provenance'])}"
                  + ("  [synthetic only: verdicts on real video are not meaningful]" if row["synthetic_only"] else ""))
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
            keys = Keys.for_settings(settings)
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
        rec = record_label(r, Keys.for_settings(settings), args.alert_id, args.label, by=args.by,
                           crop_ttl_s=settings.retrain.label_crop_ttl_s)  # fmt: skip
    crops = f"{rec['crops']} crop(s) kept for retraining" if rec["crops"] else "its crop has expired: not usable for training"
    print(f"{args.alert_id}: labelled {rec['label']} by {rec['by']} ({rec['kind']} on {rec['source']}); {crops}")
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("alerts", help="follow the alerts stream")
    asub = s.add_subparsers(dest="action", metavar="ACTION")
    asub.required = True
    a = asub.add_parser("tail", help="print alerts as they arrive (pretty on a terminal, JSON lines otherwise)")
    a.add_argument("--json", action="store_true")
    a.add_argument("--kind", action="append", choices=["verdict", "deepfake", "anomaly", "source"])
    a.add_argument("--since", metavar="ID", help="start after this stream id (0 = from the beginning; default: now)")
    a.add_argument("--count", type=int, default=0, help="exit after this many alerts")
    s.set_defaults(func=cmd_alerts, role="alerts")

    s = sub.add_parser("explain", help="saliency figure (input gradients, Grad-CAM) of an alert's evidence crop")
    s.add_argument("alert_id", metavar="ALERT_ID")
    s.add_argument("--out", metavar="PNG", help="default: ./explain-<ALERT_ID>.png")
    s.add_argument("--models", metavar="DIR", help="model registry (default: from settings)")
    s.set_defaults(func=cmd_explain, role="explain", needs_train=True)

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
