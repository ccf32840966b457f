"""Faults (issue 16): Redis SIGKILLed (3 s) or SIGTERMed (60 s, under `forensics up`) and restarted
under running ingest and detect processes, or demoted to a replica for 3 s and promoted back. (Live sources: tests/test_live.py; the 30-minute mix:
bench/soak.py.)

Real redis-server with append-only persistence (appendfsync always), real H.264 files, the
real CLI processes on a small real ONNX model version. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import redis

from forensics.streams import Keys
from tests.conftest import ROOT, free_port
from tests.media import write_test_video
from tests.redis_process import RedisProcess

SIZE = 16


def _role(args, env, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "forensics.cli", *args], env=env, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip


def _env(server: RedisProcess, prefix: str, tmp_path: Path, models: Path, **settings: str) -> dict[str, str]:
    """The roles' environment: this Redis, the tiny models, JSON logs, whole 16 px frames, one thread;
    ``settings`` are more FORENSICS_ variables (``INGEST__FPS="10"``)."""
    env = {"REDIS__URL": server.url, "REDIS__PREFIX": prefix, "MODELS_DIR": str(models),
           "STATE_DIR": str(tmp_path / "state"), "LOG_FORMAT": "json", "FACES__DETECTOR": "none",
           "INGEST__FRAME_SIZE": str(SIZE), "INGEST__STABLE_SECONDS": "0.2", "INGEST__POLL_INTERVAL": "0.05",
           "DETECT__PROVIDERS": '["CPUExecutionProvider"]', "DETECT__INTRA_OP_THREADS": "1", **settings}  # fmt: skip
    ours = {f"FORENSICS_{k}": v for k, v in env.items()}
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **ours}


def _clips_and_workers(server: RedisProcess, prefix: str, tmp_path: Path, models: Path):
    """Six 1.5 s H.264 clips (not yet dropped) and an ingest and a detect process on ``server`` that
    send and read two-frame batches: returns (watch folder, clip names, ingest, detect)."""
    watch = tmp_path / "watch"
    watch.mkdir()
    env = _env(server, prefix, tmp_path, models, INGEST__SAMPLE="fps", INGEST__FPS="10", INGEST__BATCH_SIZE="2",
               INGEST__HIGH_WATER="4", DETECT__CLAIM_IDLE_MS="2000", DETECT__BLOCK_MS="200")  # fmt: skip
    names = []
    for i in range(6):
        names.append(f"clip{i}.mp4")
        write_test_video(tmp_path / names[-1], frames=45, fps=30, width=64, height=48, gop=15)
    ingest = _role(["ingest", "--watch", str(watch)], env, tmp_path / "ingest.log")
    detect = _role(["detect", "--consumer", "d1"], env, tmp_path / "detect.log")
    return watch, names, ingest, detect


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def _log_events(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _ts(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


@pytest.mark.slow
def test_redis_sigkill_and_restart_under_ingest_and_detect_loses_and_duplicates_no_verdict(tmp_path, tiny_models):
    server = RedisProcess(tmp_path / "redis", free_port())
    server.start()
    prefix = "fault"
    watch, names, ingest, detect = _clips_and_workers(server, prefix, tmp_path, tiny_models)
    r = redis.Redis.from_url(server.url)
    keys = Keys(prefix)

    def verdicts() -> list[dict]:
        try:
            return [json.loads(f[b"event"]) for _i, f in r.xrange(keys.alerts) if b'"kind":"verdict"' in f[b"event"]]
        except redis.ConnectionError:
            return []

    try:
        for name in names:  # all dropped at once: ingest is mid-way through them at the kill
            os.replace(tmp_path / name, watch / name)
        deadline = time.monotonic() + 60
        while len(verdicts()) < 2:
            assert time.monotonic() < deadline, "no verdict before the fault"
            time.sleep(0.05)
        server.kill()
        killed_at = time.time()
        time.sleep(3.0)  # both workers hit the outage: reads, writes and backpressure checks fail
        assert ingest.poll() is None and detect.poll() is None, "a worker exited while Redis was down"
        restarting = time.time()
        back_at = server.start()  # when it answered: a worker's retry may get in a few ms before start() returns
        deadline = time.monotonic() + 120
        while len(verdicts()) < len(names):
            assert ingest.poll() is None and detect.poll() is None, "a worker exited after Redis came back"
            assert time.monotonic() < deadline, f"only {len(verdicts())} of {len(names)} verdicts"
            time.sleep(0.1)
        time.sleep(1.0)  # a duplicate would show up now
        got = [v["file"] for v in verdicts()]
        assert sorted(got) == sorted(names), got  # every file exactly one verdict
        done = sorted(p.name for p in (watch / "done").iterdir())
        assert set(done) <= set(got)  # nothing in done/ without a verdict
        reconnects = {}
        for role, log in (("ingest", tmp_path / "ingest.log"), ("detect", tmp_path / "detect.log")):
            events = _log_events(log)
            lost = [e for e in events if e.get("event", "").startswith("lost the connection to Redis")]
            back = [e for e in events if e.get("event") == "connected to Redis again"]
            assert lost and back, (role, log.read_text()[-2000:])
            assert len(lost) == len({e["what"] for e in lost})  # logged once per loop per outage
            assert not [e for e in events if e.get("level") == "error" or "Traceback" in json.dumps(e)]
            reconnects[role] = max(_ts(e) for e in back) - back_at
            assert all(_ts(e) > killed_at for e in lost)
            assert max(_ts(e) for e in back) >= restarting and reconnects[role] < 10, reconnects  # within 10 s of Redis returning
            # The duration of the outage is in the log. A loop busy scoring or decoding when Redis died notices
            # it later than one blocked on a read, so only the longest of a role's outages spans the 3 s.
            assert all(e["down_s"] > 0 for e in back) and max(e["down_s"] for e in back) >= 2.5, back
        print(json.dumps({"reconnect_after_restart_s": {k: round(v, 2) for k, v in reconnects.items()}}))
    finally:
        _stop(ingest, detect)
        r.close()
        server.stop()


@pytest.mark.slow
def test_forensics_up_rides_out_a_60_s_redis_outage_without_restarting_a_role(tmp_path, tiny_models):
    """Redis SIGTERMed (the other test SIGKILLs it) for 60 s under `forensics up` with two detect
    workers; files are dropped before and during the outage. No role exits or is given up, every
    worker reconnects within 10 s of Redis returning, every file gets exactly one verdict."""
    server = RedisProcess(tmp_path / "redis", free_port())
    server.start()
    prefix = "upfault"
    watch = tmp_path / "watch"
    watch.mkdir()
    env = _env(server, prefix, tmp_path, tiny_models, DETECT__CLAIM_IDLE_MS="5000", WEB__PORT=str(free_port()))
    up = _role(["up", "--watch", str(watch), "--detect-workers", "2"], env, tmp_path / "up.log")
    r = redis.Redis.from_url(server.url)
    keys = Keys(prefix)
    names = [f"u{i}.mp4" for i in range(5)]

    def verdicts() -> list[str]:
        try:
            return [json.loads(f[b"event"])["file"] for _i, f in r.xrange(keys.alerts) if b'"verdict"' in f[b"event"]]
        except redis.ConnectionError:
            return []

    def alive() -> bool:
        return up.poll() is None

    try:
        for name in names[:2]:
            write_test_video(watch / name, frames=30, fps=30, width=64, height=48, gop=15)
        deadline = time.monotonic() + 90
        while not verdicts():
            assert time.monotonic() < deadline and alive(), (tmp_path / "up.log").read_text()[-3000:]
            time.sleep(0.1)
        server.terminate()  # the second file may be mid-way through ingest or detect
        down_at = time.monotonic()
        for name in names[2:]:  # dropped into a daemon without Redis, while its roles back off
            time.sleep(10.0)
            write_test_video(watch / name, frames=30, fps=30, width=64, height=48, gop=15)
        time.sleep(max(0.0, 60.0 - (time.monotonic() - down_at)))
        assert alive(), (tmp_path / "up.log").read_text()[-3000:]
        back_at = server.start()
        deadline = time.monotonic() + 90
        while len(verdicts()) < len(names):
            assert alive(), (tmp_path / "up.log").read_text()[-3000:]
            assert time.monotonic() < deadline, verdicts()
            time.sleep(0.2)
        # An idle worker tries again within its backoff cap (5 s): give each until 10 s after the restart.
        while time.time() < back_at + 10.5:
            events = _log_events(tmp_path / "up.log")
            if sum(e.get("event") == "connected to Redis again" for e in events) >= 3:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # a duplicate would show up now
        assert sorted(verdicts()) == names  # every file exactly one verdict
        done = sorted(p.name for p in (watch / "done").iterdir())
        assert done == names  # all taken, none in done/ without its verdict
        events = _log_events(tmp_path / "up.log")
        started = [e for e in events if e.get("event") == "role started"]
        assert sorted(e["name"] for e in started) == ["detect-0", "detect-1", "ingest", "web"]  # once each
        assert not [e for e in events if str(e.get("event")).startswith("role exited") or "giving up" in repr(e)]
        assert not [e for e in events if e.get("level") == "error" or "Traceback" in json.dumps(e)]
        back = [e for e in events if e.get("event") == "connected to Redis again"]
        lost = [e for e in events if e.get("event", "").startswith("lost the connection to Redis")]
        by_what = {w: [e for e in back if e["what"] == w] for w in ("file ingest", "detect")}
        assert len(by_what["file ingest"]) == 1 and len(by_what["detect"]) == 2, back  # each worker, once
        assert len(lost) == len(back)  # one outage: logged once when it starts and once when it ends
        reconnect = {e.get("consumer", e["what"]): round(_ts(e) - back_at, 2) for e in back}
        assert all(-1 < v < 10 for v in reconnect.values()), reconnect  # within 10 s of Redis returning
        assert all(e["down_s"] >= 25 for e in back), back  # the outage's length is in the log
        print(json.dumps({"outage_s": 60, "reconnect_after_restart_s": reconnect}))
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
        r.close()
        server.stop()


def _offset(r: redis.Redis) -> int:
    return int(r.info("replication")["master_repl_offset"])


@pytest.mark.slow
def test_a_demoted_redis_under_ingest_and_detect_is_an_outage_not_a_dead_loop(tmp_path, tiny_models):
    """A manual failover that demotes the workers' Redis to a replica for 3 s and then promotes it back
    (writes paused, the replica caught up, roles swapped, unpaused: no write is lost by the swap). The
    workers' writes get READONLY and a blocked read is UNBLOCKED ("master -> replica"); both used to be
    plain ResponseErrors that ended the detect loop. Now both are outages: logged, retried, and every
    file gets exactly one verdict."""
    server = RedisProcess(tmp_path / "redis", free_port())
    server.start()
    other = RedisProcess(tmp_path / "redis-b", free_port())
    other.start()
    prefix = "demote"
    watch, names, ingest, detect = _clips_and_workers(server, prefix, tmp_path, tiny_models)
    a, b = redis.Redis.from_url(server.url), redis.Redis.from_url(other.url)
    b.replicaof("127.0.0.1", server.server.port)
    keys = Keys(prefix)

    def verdicts() -> list[str]:
        try:
            return [json.loads(f[b"event"])["file"] for _i, f in a.xrange(keys.alerts) if b'"kind":"verdict"' in f[b"event"]]
        except redis.ConnectionError:
            return []

    def swap(new: redis.Redis, old: redis.Redis, port: int) -> None:
        """Promote ``new`` and make ``old`` its replica, with ``old``'s writers paused until ``new`` has all."""
        old.client_pause(10_000, all=False)  # WRITE: writers wait, readers go on
        deadline = time.monotonic() + 10
        while _offset(new) < _offset(old):
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.01)
        new.replicaof("NO", "ONE")
        old.replicaof("127.0.0.1", port)
        old.client_unpause()

    try:
        deadline = time.monotonic() + 30
        while a.info("replication")["connected_slaves"] < 1:
            assert time.monotonic() < deadline, "the replica did not connect"
            time.sleep(0.05)
        for name in names[:3]:
            os.replace(tmp_path / name, watch / name)
        deadline = time.monotonic() + 60
        while len(verdicts()) < 2:
            assert time.monotonic() < deadline, "no verdict before the fault"
            time.sleep(0.05)
        demoted_at = time.time()
        swap(b, a, other.server.port)
        for name in names[3:]:  # ingest may have finished the first three: these it sends into the replica
            os.replace(tmp_path / name, watch / name)
        time.sleep(3.0)  # the workers' writes answer READONLY
        assert ingest.poll() is None and detect.poll() is None, "a worker exited while its Redis was a replica"
        promoted_at = time.time()
        swap(a, b, server.server.port)
        deadline = time.monotonic() + 60
        while len(verdicts()) < len(names):
            assert ingest.poll() is None and detect.poll() is None, "a worker exited after the failover back"
            assert time.monotonic() < deadline, (
                f"only {len(verdicts())} of {len(names)} verdicts",
                (tmp_path / "detect.log").read_text()[-1500:], (tmp_path / "ingest.log").read_text()[-1500:])
            time.sleep(0.1)
        time.sleep(1.0)  # a duplicate would show up now
        assert sorted(verdicts()) == sorted(names)  # every file exactly one verdict
        for role, log in (("ingest", tmp_path / "ingest.log"), ("detect", tmp_path / "detect.log")):
            events = _log_events(log)
            lost = [e for e in events if e.get("event", "").startswith("lost the connection to Redis")]
            back = [e for e in events if e.get("event") == "connected to Redis again"]
            assert lost and back, (role, log.read_text()[-2000:])
            assert all(demoted_at <= _ts(e) for e in lost) and all(_ts(e) >= promoted_at for e in back), (lost, back)
            assert not [e for e in events if e.get("level") == "error" or "Traceback" in json.dumps(e)], role
        print(json.dumps({role: sorted({e["error"].split(":")[0] for e in _log_events(tmp_path / f"{role}.log")
                                        if "error" in e}) for role in ("ingest", "detect")}))  # fmt: skip
    finally:
        _stop(ingest, detect)
        a.close()
        b.close()
        server.stop()
        other.stop()
