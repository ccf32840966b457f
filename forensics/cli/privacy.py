"""Personal-data verbs: ``purge`` (what Redis keeps about a source) and ``privacy`` (what the served
scores leak about training faces: membership inference and model inversion, a report per version)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from forensics.config import Settings


def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    from forensics.purge import parse_date, purge_before, purge_source
    from forensics.redisconn import redis_for
    from forensics.streams import Keys

    when = parse_date(args.before) if args.before else None
    with redis_for(settings) as (r, _url):
        keys = Keys.for_settings(settings)
        counts = purge_source(r, keys, args.source) if args.source else purge_before(r, keys, when)
    print(json.dumps({"purged": args.source or args.before, **counts}))
    return 0


def cmd_privacy(args: argparse.Namespace, settings: Settings) -> int:
    from trainer.privacy import run_privacy
    from trainer.privacy_report import summary

    models = Path(args.models) if args.models else settings.models_dir
    out = []
    for version in args.model:
        result = run_privacy(models, version, [str(d) for d in args.data], quick=args.quick, seed=args.seed,
                             cache_dir=args.cache or str(settings.state_dir / "crops"),
                             out_dir=models / version / "report" / "privacy", dp=args.dp)  # fmt: skip
        out.append(summary(result))
    print(json.dumps(out if len(out) > 1 else out[0], indent=1))
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser(
        "purge", help="delete evidence crops, results, alerts, labels and aggregation state kept in Redis"
    )
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--source", metavar="ID", help="everything kept about this source")
    g.add_argument(
        "--before", metavar="DATE", help="everything older than this ISO date (UTC unless it says)"
    )
    s.set_defaults(func=cmd_purge, role="purge")

    s = sub.add_parser(
        "privacy", help="membership inference and model inversion from the served scores (report)"
    )
    s.add_argument("--model", required=True, action="append", metavar="VERSION", help="repeatable")
    s.add_argument("--data", required=True, action="append", type=Path, metavar="DIR", help="repeatable")
    s.add_argument("--models", metavar="DIR", help="model registry (default: from settings)")
    s.add_argument("--cache", metavar="DIR", help="face crop cache (default: <state_dir>/crops)")
    s.add_argument("--quick", action="store_true", help="fewer reconstructions, steps and queries")
    s.add_argument(
        "--dp", action="store_true", help="also train the DP-SGD variant (Opacus) with and without DP"
    )
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_privacy, role="privacy")
