"""The one logger setup: structlog, JSON lines off a terminal, readable console output on one.

Every process calls :func:`configure_logging` once with its role; threads handling a source
bind ``source=...`` on their logger, so every line says which role and source it is about.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from forensics.redact import redact

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(role: str, level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog for this process. ``fmt``: auto | json | console."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if not use_console else structlog.dev.set_exc_info,
            _redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=False,
    )
    # contextvars do not cross into new threads, so the role is also a global default below.
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(role=role)
    _ROLE["role"] = role


_ROLE = {"role": "cli"}


def _redact_secrets(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """No log line carries a password: every string value goes through the one redaction function."""
    return {k: _redacted(v) for k, v in event.items()}


def _redacted(v: Any) -> Any:
    if isinstance(v, str):
        return redact(v)
    if isinstance(v, (list, tuple)):
        return type(v)(_redacted(x) for x in v)
    if isinstance(v, dict):
        return {k: _redacted(x) for k, x in v.items()}
    if isinstance(v, BaseException):
        return redact(f"{type(v).__name__}: {v}")
    return v


class _CurrentStderr:
    """Whatever sys.stderr is at write time (it is swapped by test runners and daemonizers),
    so a logger configured once never writes to a stream that has since been closed."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


# Before a process calls configure_logging (library use, benchmarks, tests), structlog's default
# would print to stdout, mixed into the JSON that commands and benchmarks print there.
structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()))


def get_logger(**context: Any) -> Any:
    """A logger bound to this process's role plus ``context`` (e.g. ``source=...``)."""
    return structlog.get_logger().bind(role=_ROLE["role"], **context)
