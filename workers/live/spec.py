"""A live source from the CLI's ``--rtsp ID=URL``."""

from __future__ import annotations

from pydantic import ValidationError

from forensics.config import LiveSourceSettings
from forensics.errors import ConfigError


def source_from_spec(spec: str) -> LiveSourceSettings:
    """A live source from the CLI's ``--rtsp ID=URL``; raises ConfigError with one line if malformed."""
    source_id, sep, url = spec.partition("=")
    if not sep or not source_id.strip() or not url.strip():
        raise ConfigError(f"--rtsp {spec!r}: expected ID=URL, e.g. --rtsp cam1=rtsp://10.0.0.5:554/stream")
    try:
        return LiveSourceSettings(id=source_id.strip(), url=url.strip())
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"--rtsp {spec!r}: {problems}") from None
