"""Report verbs: ``report`` (a case report for a file or an alert, :mod:`forensics.casereport`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from forensics.config import Settings


def _explainer(settings: Settings):
    """artifact -> saliency function, when the trainer extra is installed; else None."""
    try:
        from trainer.explain import crop_explainer
    except ImportError:
        return None
    return lambda art: crop_explainer(art, margin=settings.faces.margin)


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    """A case report (HTML, optionally PDF) for a video file or an alert id."""
    from forensics import casepage, casereport
    from forensics.registry import Registry

    reg = Registry(Path(args.models) if args.models else settings.models_dir)
    explainer = _explainer(settings)
    target = Path(args.target)
    # Alert ids are "<source>:<kind>[:...]"; anything else that looks like a path is a file.
    if target.exists() or (":" not in args.target and (target.suffix or "/" in args.target)):
        from forensics.model import load_model

        casereport.check_readable(target, settings)  # an unreadable file fails here, before the model loads
        model = load_model(reg, args.model, providers=settings.detect.providers)
        case = casereport.case_from_scan(target, settings, model,
                                         explain=explainer(model.artifact) if explainer else None)  # fmt: skip
    else:
        from forensics.redisconn import redis_for
        from forensics.streams import Keys
        from workers.ingest import file_key, source_id_for

        done = settings.ingest.done_dir or (settings.ingest.watch_dir / "done" if settings.ingest.watch_dir else None)

        def locate(alert: dict) -> Path | None:  # the dropped file in done/, if it is this alert's
            found = done / alert["file"] if done and alert.get("file") else None
            ok = found is not None and found.is_file() and source_id_for(found, file_key(found)) == alert["source"]
            return found if ok else None

        with redis_for(settings) as (r, _url):
            case = casereport.case_from_alert(r, Keys(settings.redis.prefix), args.target, reg, settings,
                                              locate_file=locate, explainer=explainer)  # fmt: skip
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in (target.stem if case.alert is None else args.target))
    out = casepage.write_html(case, Path(args.out) if args.out else Path(f"case-{safe}.html"))
    print(out)
    if args.pdf:
        print(casepage.write_pdf(out, out.with_suffix(".pdf")))
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("report", help="a self-contained case report (HTML, --pdf too) for a video file or an alert")
    s.add_argument("target", metavar="FILE_OR_ALERT_ID")
    s.add_argument("--out", metavar="HTML", help="default: ./case-<name>.html")
    s.add_argument("--pdf", action="store_true", help="also print it to PDF (headless Chromium), beside the HTML")
    s.add_argument("--model", help="model version for a file (default: current)")
    s.add_argument("--models", metavar="DIR", help="model registry (default: from settings)")
    s.set_defaults(func=cmd_report, role="report")
