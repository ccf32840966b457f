"""The daemon on a real local Redis Cluster (3 masters; 3 replicas for failover), started here on
free ports: hash-tagged shards, exactly one verdict per file, live sources, a master killed."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from forensics.config import load_settings
from forensics.errors import RedisUnavailable
from forensics.outage import REDIS_DOWN
from forensics.redisconn import connect, connect_settings
from forensics.sources import source_rows
from forensics.streams import Keys, replicated, total_backlog
from tests.media import write_test_video
from tests.redis_cluster import LocalCluster
from tests.test_live import RtspServer
from trainer.synth import render_sample_clip
from workers.detect import DetectWorker
from workers.ingest import FileIngest
from workers.live import LiveSupervisor


def _slot(key: str) -> int:
    return key_slot(key.encode())


def test_default_key_names_are_unchanged():
    k = Keys("forensics")
    assert (k.frames, k.alerts, k.results, k.dead, k.model) == (
        "forensics:frames", "forensics:alerts", "forensics:results", "forensics:dead", "forensics:model")  # fmt: skip
    assert k.source("cam") == "forensics:sources:cam" and k.aggregate("f") == "forensics:agg:f"
    assert (k.window("c"), k.live_state("c"), k.evidence("c")) == ("forensics:win:c", "forensics:live:c", "forensics:crops:c")
    assert k.ingest_progress("abc", "f") == "forensics:ingest:abc" and k.alert_marker("x") == "forensics:alert-ids:x"
    assert k.frames_shards == ["forensics:frames"]


@pytest.mark.parametrize("shards", [1, 3, 8])
def test_each_sources_keys_share_one_slot_with_its_frames_shard(shards):
    k = Keys("forensics", shards=shards, cluster=True)
    for source in ("cam1", "lobby", "clip-0a1b2c3d", "x" * 64):
        shard = k.frames_for(source)
        assert shard in k.frames_shards
        same = {k.source(source), k.aggregate(source), k.window(source), k.live_state(source), k.evidence(source),
                k.ingest_progress("f00d", source), shard}  # fmt: skip
        assert len({_slot(key) for key in same}) == 1, same
        assert k.source_id_of(k.source(source)) == source
    # the emit-once script's two keys: the marker and the alerts stream, one slot
    assert _slot(k.alert_marker("cam1:verdict")) == _slot(k.alerts) == _slot(k.results) == _slot(k.dead)
    # shards spread evenly over the slot space (so over the masters of an evenly split cluster)
    assert [_slot(s) * shards // 16384 for s in k.frames_shards] == list(range(shards))


def test_sources_spread_over_shards():
    k = Keys("forensics", shards=3)
    counts = [0, 0, 0]
    for i in range(300):
        counts[k.shard_of(f"clip{i}-{i * 7919:08x}")] += 1
    assert min(counts) > 70, counts


def test_cluster_mode_over_a_unix_socket_is_refused_with_one_line(tmp_path):
    with pytest.raises(RedisUnavailable, match="reached over TCP"):
        connect(f"unix://{tmp_path}/redis.sock", cluster=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("cluster"), masters=3, replicas=0) as c:
        yield c


def test_factory_returns_the_cluster_client_and_a_plain_client_is_refused_with_one_line(cluster):
    r = connect(cluster.url, cluster=True)
    assert type(r).__name__ == "RedisCluster" and len(r.get_primaries()) == 3
    with pytest.raises(RedisUnavailable, match="is a Redis Cluster node: set redis.cluster = true"):
        connect(cluster.url)


def test_a_write_to_a_node_that_lost_its_slot_is_retried_not_fatal(cluster, prefix):
    """A node that no longer owns a slot (a failover demoted it, or the slot moved) answers MOVED to
    what :func:`replicated` sends it: a retryable REDIS_DOWN error, never a ResponseError that ends the
    ingest or detect loop's thread; the layout is re-learnt, so the retry goes to the new owner."""
    r, keys = connect(cluster.url, cluster=True), Keys(prefix, cluster=True)
    key, slot = keys.alerts, _slot(keys.alerts)
    nodes = {n.name: redis.Redis(host=n.host, port=n.port) for n in r.get_primaries()}
    src = r.get_node_from_key(key).name
    dst = next(name for name in nodes if name != src)

    def give_slot_to(owner: str) -> None:  # the slot holds no key: it can be reassigned at once
        owner_id = nodes[owner].execute_command("CLUSTER", "MYID")
        for name in sorted(nodes, key=lambda n: n != owner):  # the new owner first
            nodes[name].execute_command("CLUSTER", "SETSLOT", slot, "NODE", owner_id)

    def write() -> None:
        with replicated(r, keys, key) as c:
            pipe = c.pipeline(transaction=True)
            pipe.xadd(key, {"n": "1"})
            pipe.execute()

    give_slot_to(dst)  # r still routes the slot to src
    try:
        with pytest.raises(REDIS_DOWN):
            write()
        write()
        assert r.get_node_from_key(key).name == dst and r.xlen(key) == 1
    finally:
        r.delete(key)
        give_slot_to(src)


def _settings(tmp_path, url, prefix, trained, **redis):
    models = tmp_path / "models"
    if not models.exists():
        shutil.copytree(trained["models_dir"], models, symlinks=True)
    return load_settings(
        state_dir=tmp_path / "state", models_dir=models, log_format="json",
        redis={"url": url, "prefix": prefix, **redis},
        ingest={"watch_dir": tmp_path / "watch", "stable_seconds": 0.1, "poll_interval": 0.05, "frame_size": 64,
                "sample": "fps", "fps": 4.0, "batch_size": 4},
        faces={"detector": "none"},
        detect={"claim_idle_ms": 1000, "max_deliveries": 5, "block_ms": 100},
    )  # fmt: skip


def _daemon_on(url: str, tmp_path, prefix, trained, clips):
    """Settings for 3 shards on the cluster at ``url``, a client, the keys, and the clips dropped."""
    s = _settings(tmp_path, url, prefix, trained, cluster=True, shards=3)
    watch = Path(s.ingest.watch_dir)
    watch.mkdir(parents=True)
    for p in clips:
        shutil.copy(p, watch / p.name)
    return s, connect_settings(s, s.redis.url), Keys.for_settings(s), watch


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("cluster-clips")
    out = []
    for i in range(6):
        p = d / f"c{i}.mp4"
        render_sample_clip(p, fake=bool(i % 2), seed=700 + i, seconds=1.5, difficulty=0.0)
        out.append(p)
    return out


@pytest.fixture
def pattern_rtsp(tmp_path) -> str:
    """A real RTSP camera (GStreamer) looping a small H.264 clip; yields its URL."""
    clip = write_test_video(tmp_path / "pattern.mp4", frames=50, fps=25, width=160, height=120, gop=25)
    srv = RtspServer(clip).start()
    yield srv.url()
    srv.kill()


def _verdicts(r, keys: Keys) -> list[dict]:
    return [json.loads(f[b"event"]) for _i, f in r.xrange(keys.alerts) if b'"kind":"verdict"' in f[b"event"]]


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def _start(stop: threading.Event, *targets) -> list[threading.Thread]:
    threads = [threading.Thread(target=t, args=(stop,), daemon=True) for t in targets]
    for t in threads:
        t.start()
    return threads


@pytest.mark.slow
def test_files_and_a_live_source_on_three_shards_get_exactly_one_verdict_each(cluster, clips, trained, tmp_path,
                                                                             prefix, pattern_rtsp):  # fmt: skip
    s, r, keys, _watch = _daemon_on(cluster.url, tmp_path, prefix, trained, clips)
    s.sources = [{"id": "cam", "url": pattern_rtsp, "fps": 4.0}]
    ingest, live = FileIngest(s, r), LiveSupervisor(s, r)
    workers = [DetectWorker(s, r, consumer=f"w{i}") for i in range(2)]
    stop = threading.Event()
    threads = _start(stop, ingest.run, live.run, *(w.run for w in workers))
    try:
        assert _wait(lambda: len(_verdicts(r, keys)) >= len(clips), 180), _verdicts(r, keys)
        assert _wait(lambda: int(r.hget(keys.source("cam"), "batches_sent") or 0) >= 4, 30)
    finally:
        stop.set()
        [t.join(30) for t in threads]
    # drain what the live source sent before it stopped
    w = workers[0]
    while w.step_new():
        pass
    verdicts = _verdicts(r, keys)
    assert sorted(v["file"] for v in verdicts) == sorted(p.name for p in clips)  # one each, none twice
    assert {v["label"] for v in verdicts} <= {"REAL", "FAKE"}
    # the files' sources really went to different shards, and each shard was consumed
    used = {keys.shard_of(v["source"]) for v in verdicts} | {keys.shard_of("cam")}
    assert len(used) >= 2, used
    assert total_backlog(r, keys) == 0
    # every live batch sent was scored exactly once (no failures here, so no redelivery)
    sent = int(r.hget(keys.source("cam"), "batches_sent"))
    live_results = [e for _i, f in r.xrange(keys.results) if (e := json.loads(f[b"event"]))["source"] == "cam"]
    assert len(live_results) == sent and len({e["seq"] for e in live_results}) == sent
    # `forensics sources` finds every source hash across the masters
    rows = {row["id"]: row for row in source_rows(r, s)}
    assert "cam" in rows and sum(row.get("kind") == "file" for row in rows.values()) == len(clips)
    assert sum(w.stats["batches"] for w in workers) == sum(int(r.hget(keys.source(v["source"]), "batches") or 0)
                                                          for v in verdicts) + sent  # fmt: skip


@pytest.mark.slow
def test_a_killed_master_loses_no_verdict(clips, trained, tmp_path, prefix):
    """3 masters + 3 replicas; the master of the alerts slot (and of a frames shard) is SIGKILLed
    mid-run; its replica is promoted and every file still gets exactly one verdict."""
    with LocalCluster(tmp_path / "ha", masters=3, replicas=1) as c:
        s, r, keys, watch = _daemon_on(c.url, tmp_path, prefix, trained, clips)
        ingest, worker = FileIngest(s, r), DetectWorker(s, r, consumer="w1")
        stop = threading.Event()
        threads = _start(stop, ingest.run, worker.run)
        try:
            assert _wait(lambda: len(_verdicts(r, keys)) >= 1, 120)
            killed = c.kill_master_of(keys.alerts)
            assert c.master_port_of(keys.alerts) != killed
            # On failure: the files with verdicts, and whether the ingest and detect threads still run (a
            # loop ended by an error it does not retry leaves no log line; pytest reports it as a warning).
            assert _wait(lambda: len(_verdicts(r, keys)) >= len(clips), 180), (
                [v["file"] for v in _verdicts(r, keys)], {"alive": [t.is_alive() for t in threads]})
            time.sleep(1.0)  # would a duplicate show up?
        finally:
            stop.set()
            [t.join(30) for t in threads]
        verdicts = _verdicts(r, keys)
        assert sorted(v["file"] for v in verdicts) == sorted(p.name for p in clips)
        assert sorted(p.name for p in (watch / "done").iterdir()) == sorted(p.name for p in clips)
        assert total_backlog(r, keys) == 0
