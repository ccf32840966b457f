"""Shared bench plumbing: a private redis-server, sample media, timing. Benchmarks print JSON."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import redis

from forensics.redisconn import find_redis_server


@contextmanager
def private_redis() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", d],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(200):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


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
