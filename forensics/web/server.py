"""``forensics web``: check the access settings, bind, print the console's URL, serve with uvicorn."""

from __future__ import annotations

import getpass
import socket
import sys
import time
import urllib.request

import uvicorn

from forensics.config import Settings
from forensics.errors import ConfigError
from forensics.logs import get_logger
from forensics.web.access import check_bind, hash_password
from forensics.web.app import create_app


def console_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror}): set web.port or web.host") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def free_console_port(host: str, preferred: int) -> int:
    """``preferred`` if it can be bound on ``host`` now, else a free port chosen by the OS."""
    for port in (preferred, 0):
        try:
            sock = bind_socket(host, port)
        except ConfigError:
            continue
        try:
            return sock.getsockname()[1]
        finally:
            sock.close()
    raise ConfigError(f"no free port on {host} for the console")


def wait_for_console(url: str, timeout_s: float = 30.0) -> bool:
    """True once the console at ``url`` answers (its /api/me), False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "api/me", timeout=2) as res:
                if res.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def run_web(settings: Settings, *, config: str | None = None, port: int | None = None) -> int:
    """Serve the console until SIGINT/SIGTERM. Refuses a non-loopback bind without users (ConfigError)."""
    if port is not None:
        settings.web.port = port
    cfg = settings.web
    check_bind(cfg)
    app = create_app(settings, config=config)
    sock = bind_socket(cfg.host, cfg.port)
    port = sock.getsockname()[1]
    url = console_url(cfg.host, port)
    who = "no users configured: every local visitor is " + str(cfg.local_role) if not cfg.users else f"{len(cfg.users)} user(s)"
    print(f"forensics web: console at {url} ({who})", flush=True)
    get_logger().info("console listening", url=url)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=3))  # fmt: skip
    server.run(sockets=[sock])
    return 0


def print_password_hash() -> int:
    """Read a password (twice on a terminal, once from a pipe) and print its argon2 hash."""
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            raise ConfigError("the two passwords differ")
    else:
        first = sys.stdin.readline().rstrip("\n")
    if len(first) < 8:
        raise ConfigError("use a password of at least 8 characters")
    print(hash_password(first))
    return 0
