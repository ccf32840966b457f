"""The ``forensics`` command. Each subcommand is a small function; heavy imports happen inside it,
so ``forensics --help`` and the workers never import torch.

User errors (ForensicsError) end in one line on stderr and exit status 2; programming errors
keep their traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

from forensics import __version__
from forensics.config import Settings, load_settings
from forensics.errors import ConfigError, ForensicsError
from forensics.logs import configure_logging

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

    if args.watch:
        settings.ingest.watch_dir = Path(args.watch)
    if settings.ingest.watch_dir is None:
        raise ConfigError("nothing to ingest: give --watch DIR or set ingest.watch_dir")
    stop = _stop_event()
    with redis_for(settings) as (r, _url):
        FileIngest(settings, r).run(stop)
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="forensics", description="Streaming video forensics daemon.")
    p.add_argument("--version", action="version", version=f"forensics {__version__}")
    p.add_argument("--config", metavar="TOML", help="settings file (TOML); env FORENSICS_* overrides it")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("ingest", help="watch a folder for dropped video files and put frame batches on Redis")
    s.add_argument("--watch", metavar="DIR", help="folder to watch (default: ingest.watch_dir)")
    s.set_defaults(func=cmd_ingest, role="ingest")

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
        print(f"forensics: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
