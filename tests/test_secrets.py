"""Secrets never printed (issue 16): every output of real CLI processes is grepped for the password."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from forensics.redact import redact
from forensics.redisconn import find_redis_server
from tests.conftest import ROOT, TEST_PASSWORD, free_port

PASSWORD = TEST_PASSWORD


@pytest.mark.parametrize(
    "text, shown",
    [
        (f"redis://:{PASSWORD}@h:6379/0", "redis://:***@h:6379/0"),
        (f"redis://user:{PASSWORD}@h/0", "redis://user:***@h/0"),
        (f"rediss://h:6380/0?password={PASSWORD}&db=1", "rediss://h:6380/0?password=***&db=1"),
        (f"redsi://:{PASSWORD}@host", "redsi://:***@host"),  # mistyped scheme
        (f":{PASSWORD}@localhost:6379", ":***@localhost:6379"),  # no scheme at all
        (f"rtsp://cam:{PASSWORD}@10.0.0.5/stream", "rtsp://cam:***@10.0.0.5/stream"),
        (f"auth failed: password={PASSWORD}", "auth failed: password=***"),
        ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
    ],
)
def test_redact_hides_the_password_in_every_url_form(text, shown):
    assert redact(text) == shown


def _run(args, env_extra, timeout=60):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    p = subprocess.run([sys.executable, "-m", "forensics.cli", *args], env=env, capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT, check=False)  # fmt: skip
    return p.returncode, p.stdout + p.stderr


@pytest.mark.parametrize(
    "url",
    [
        "redis://:{pw}@127.0.0.1:{port}/0",  # nobody listens: connection refused
        "redis://127.0.0.1:{port}/0?password={pw}",
        "redis://someone:{pw}@127.0.0.1:{port}/0",
        "redsi://:{pw}@127.0.0.1:{port}",  # mistyped scheme: a config error
        ":{pw}@127.0.0.1:{port}",  # unparseable
    ],
)
def test_no_error_line_carries_the_password(url, tmp_path):
    code, out = _run(["detect"], {"FORENSICS_REDIS__URL": url.format(pw=PASSWORD, port=free_port()),
                                  "FORENSICS_STATE_DIR": str(tmp_path)})  # fmt: skip
    assert code == 2 and "forensics: error:" in out
    assert PASSWORD not in out
    assert ".." not in out.replace("...", "")  # "Connection refused.. Check" is gone


def test_up_banner_logs_and_auth_errors_never_show_the_password(tmp_path):
    port = free_port()
    server = subprocess.Popen([find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", PASSWORD],
                              stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port, password=PASSWORD).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "FORENSICS_REDIS__URL": url,
               "FORENSICS_STATE_DIR": str(tmp_path / "st"), "FORENSICS_LOG_FORMAT": "json"}  # fmt: skip
        up = subprocess.Popen([sys.executable, "-m", "forensics.cli", "up", "--detect-workers", "0"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)  # fmt: skip
        # Roles log as they start (the web role may come first); the banner follows within a few lines.
        head: list[str] = []
        while len(head) < 20 and not any(line.startswith("forensics up:") for line in head):
            line = up.stdout.readline()
            if not line:
                break
            head.append(line)
        banner = next((line for line in head if line.startswith("forensics up:")), "".join(head))
        up.send_signal(signal.SIGTERM)
        rest, _ = up.communicate(timeout=30)
        rest = "".join(head) + rest
        assert banner.startswith("forensics up:") and f"127.0.0.1:{port}" in banner
        assert PASSWORD not in banner + rest
        # A wrong password: the auth error names the URL without either password.
        code, out = _run(["detect"], {"FORENSICS_REDIS__URL": f"redis://:{PASSWORD}x@127.0.0.1:{port}/0",
                                      "FORENSICS_STATE_DIR": str(tmp_path / "st")})  # fmt: skip
        assert code == 2 and PASSWORD not in out and "***" in out
    finally:
        server.terminate()
        server.wait(10)


def test_any_test_that_prints_the_password_fails(tmp_path):
    """The suite-wide check (tests/conftest.py) on a throwaway suite: printed, logged or written to
    stderr by a child process, the password fails the test that let it out."""
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "test_leak.py").write_text(
        "import logging, subprocess, sys\n"
        f"PW = {PASSWORD!r}\n"
        "def test_print():\n    print('redis://:' + PW + '@h')\n"
        "def test_log():\n    logging.getLogger('x').warning('url %s', PW)\n"
        "def test_child(capfd):\n    subprocess.run([sys.executable, '-c', f'import sys; sys.stderr.write({PW!r})'])\n"
        "def test_clean():\n    print('redis://:***@h')\n"
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                          str(tmp_path)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
                         check=False)  # fmt: skip
    assert "3 failed, 1 passed" in out.stdout, out.stdout[-2000:]
    assert "the test Redis password was printed" in out.stdout
