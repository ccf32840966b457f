"""`forensics up`'s supervisor under faults (issue 16): backoff between restarts, no giving up on a
role while Redis is down, the embedded redis-server restarted. Real processes, real redis-server."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from forensics.config import load_settings
from forensics.errors import ForensicsError
from forensics.logs import configure_logging
from forensics.supervisor import Supervisor
from tests.conftest import free_port
from tests.redis_process import RedisProcess


def test_a_failing_role_is_restarted_with_backoff_and_never_given_up_while_redis_is_down(tmp_path, capfd):
    configure_logging("supervisor", "info", "json")
    server = RedisProcess(tmp_path / "redis", free_port())
    server.start()
    settings = load_settings(state_dir=tmp_path / "st", models_dir=tmp_path / "no-models", redis={"url": server.url})
    # `scan` without a model exits at once with status 2: a role that keeps failing.
    sup = Supervisor(settings, [("flaky", ["scan", str(tmp_path / "x.mp4")])], max_restarts=2, window_s=60,
                     backoff_base_s=0.2, backoff_cap_s=1.0, log_dir=tmp_path / "logs")  # fmt: skip
    stop = threading.Event()
    errors: list[BaseException] = []

    def watch():
        try:
            sup.watch(stop, poll=0.05)
        except ForensicsError as err:
            errors.append(err)

    try:
        sup.start()
        server.kill()  # Redis is down from here on
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        lines: list[dict] = []
        delays: list[float] = []
        deadline = time.monotonic() + 120  # each start of the role takes seconds on a busy machine
        while len(delays) < 4 and time.monotonic() < deadline:
            time.sleep(0.5)
            lines += [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
            delays = [x["restart_in_s"] for x in lines if x["event"] == "role exited; restarting after backoff"]
        assert len(delays) >= 4, delays
        assert t.is_alive() and not errors  # past its budget (2), but Redis is down: not given up
        assert max(delays) <= 1.0 and delays[0] < max(delays[2:])  # growing, capped
        assert sum("Redis is down" in x["event"] for x in lines) == 1  # said once
        server.start()  # Redis is back and the role still fails: now the budget applies
        t.join(20)
        assert errors and "giving up" in str(errors[0]) and "flaky" in str(errors[0])
    finally:
        stop.set()
        sup.stop()
        server.stop()


def test_the_embedded_redis_server_is_restarted_if_it_dies(tmp_path):
    settings = load_settings(state_dir=tmp_path / "st")
    sup = Supervisor(settings, [])
    stop = threading.Event()
    sup.start()
    t = threading.Thread(target=sup.watch, args=(stop,), kwargs={"poll": 0.05}, daemon=True)
    t.start()
    try:
        emb = sup.embedded
        emb.proc.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not (emb.proc is not None and emb.proc.poll() is None and emb.alive()):
            assert time.monotonic() < deadline, "embedded redis was not restarted"
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(20)
    assert sup.embedded is None  # stopped with the supervisor


@pytest.fixture(autouse=True)
def _reset_logging():
    yield
    import structlog

    structlog.reset_defaults()
