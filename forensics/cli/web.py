"""``forensics web``: the console (its body lives in :mod:`forensics.web`)."""

from __future__ import annotations

import argparse

from forensics.config import Settings


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    from forensics.web.server import print_password_hash, run_web

    if args.host:  # one override of web.host (containers bind 0.0.0.0; users must then be configured)
        settings = settings.model_copy(update={"web": settings.web.model_copy(update={"host": args.host})})
    return print_password_hash() if args.hash_password else run_web(settings, config=args.config, port=args.port)


def add_parsers(sub) -> None:
    s = sub.add_parser("web", help="the console: sources, live alerts with faces, verdict timelines, labels, models")
    s.add_argument("--hash-password", action="store_true", help="print the argon2 hash of a password read from stdin")
    s.add_argument("--host", help="address to listen on (default: web.host, 127.0.0.1)")
    s.add_argument("--port", type=int, help="TCP port (default: web.port)")
    s.set_defaults(func=cmd_web, role="web")
