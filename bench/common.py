"""Shared bench plumbing: a private redis-server, sample media, timing. Benchmarks print JSON."""

from __future__ import annotations

import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from forensics.redisconn import EmbeddedRedis


@contextmanager
def private_redis() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-redis-")), port=port, persist=False) as server:
        yield server.url


def sample_clip(path: Path, *, width: int, height: int, fps: int, seconds: float, fake: bool = False) -> Path:
    """A synthetic face clip (trainer.synth) of the given size: realistic content for decode speed."""
    from trainer.synth import render_sample_clip  # noqa: PLC0415

    if not path.exists():
        render_sample_clip(path, fake=fake, seed=0, width=width, height=height, fps=fps, seconds=seconds)
    return path


def best_of(n: int, fn) -> float:
    """Fastest wall time of n runs of fn(), seconds."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
