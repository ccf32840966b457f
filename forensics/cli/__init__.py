"""The ``forensics`` command: the top of the house, the one package that imports ``workers`` and
``trainer``. One module per group of verbs (:mod:`.daemon`, :mod:`.models`, :mod:`.training`,
:mod:`.reports`, :mod:`.demo`, :mod:`.privacy`, :mod:`.web`); each subcommand is a small function, and
heavy imports happen inside it, so ``forensics --help`` and the workers never import torch.

User errors (ForensicsError) end in one line on stderr and exit status 2; so does a training verb
run without the ``train`` extra. Programming errors keep their traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

from forensics import __version__
from forensics.cli import daemon, demo, models, privacy, reports, training, web
from forensics.cli.models import format_alert
from forensics.config import load_settings
from forensics.errors import ForensicsError
from forensics.logs import configure_logging
from forensics.redact import redact

__all__ = ["build_parser", "format_alert", "main"]

# Import names of the ``train`` extra's packages (pyproject.toml).
TRAIN_EXTRA = ("torch", "torchvision", "onnx", "onnxscript", "matplotlib", "skimage", "sklearn", "tqdm", "opacus")


def _needs_train_extra(command: str, missing: str) -> int:
    print(f"forensics: error: `forensics {command}` needs the trainer's packages ({missing} is not installed): "
          "pip install 'video-forensics[train]'", file=sys.stderr)  # fmt: skip
    return 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="forensics", description="Streaming video forensics daemon.")
    p.add_argument("--version", action="version", version=f"forensics {__version__}")
    p.add_argument("--config", metavar="TOML", help="settings file (TOML); env FORENSICS_* overrides it")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in (daemon, web, models, reports, demo, training, privacy):
        group.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "needs_train", False):  # say so before doing anything
        missing = next((m for m in TRAIN_EXTRA if importlib.util.find_spec(m) is None), None)
        if missing:
            return _needs_train_extra(args.command, missing)
    try:
        settings = load_settings(args.config)
        if args.log_level:
            settings.log_level = args.log_level
        configure_logging(args.role, settings.log_level, settings.log_format)
        return args.func(args, settings)
    except ForensicsError as err:
        print(f"forensics: error: {redact(err)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in TRAIN_EXTRA:
            raise
        return _needs_train_extra(args.command, err.name)
