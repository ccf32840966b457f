"""forensics purge: removes exactly one source's data (or everything older than a date) in a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from forensics.alerts import (
    AlertWriter,
    encode_crop_png,
    evidence_field,
    make_alert,
)
from forensics.errors import ForensicsError
from forensics.labels import record_label
from forensics.purge import parse_date, purge_before, purge_source
from forensics.streams import Keys


def _populate(r, keys: Keys, source: str, t0: float, kind: str = "file") -> None:
    """What a detect worker, ingest and an analyst leave behind for one source (keys as they write them)."""
    rng = np.random.default_rng(abs(hash(source)) % 2**32)
    png = encode_crop_png(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    for frame in (0, 4):
        field = evidence_field(frame, 0)
        r.hset(keys.evidence(source), field, png)
        r.zadd(keys.evidence_times(source), {field: t0 + frame})
    r.hset(keys.aggregate(source), "b:0", json.dumps([[0, 0.0, 0, 0.9, 1.0, 0, [0, 0, 16, 16]]]))
    r.zadd(keys.window(source), {"0:0:0.900000:0:1": t0})
    r.hset(keys.live_state(source), "deepfake", "on")
    r.hset(keys.ingest_progress(f"k{source}", source), mapping={"written": 1, "source": source})
    r.hset(keys.source(source), mapping={"down": 0, "frames": 3})  # counters only: kept
    r.xadd(keys.results, {"event": json.dumps({"source": source, "seq": 0, "crops": []})})
    alert = make_alert("deepfake", source, f"{source}:deepfake:0", score=0.9,
                       evidence={"frame": 4, "track": 0, "box": [0, 0, 16, 16], "fake_prob": 0.9})  # fmt: skip
    assert AlertWriter(r, keys).emit(alert)
    rec = record_label(r, keys, alert["alert_id"], "fake", by="analyst")
    assert rec["crops"] == 1


def _snapshot(r, keys: Keys) -> dict:
    """Every key under the prefix with its full content (stream entries included)."""
    out = {}
    for k in sorted(r.scan_iter(match=f"{keys.name}:*")):
        t = r.type(k).decode()
        if t == "hash":
            out[k] = (t, r.hgetall(k))
        elif t == "zset":
            out[k] = (t, r.zrange(k, 0, -1, withscores=True))
        elif t == "stream":
            out[k] = (t, r.xrange(k))
        else:
            out[k] = (t, r.dump(k))
    return out


def _by_source(snapshot: dict, source: str) -> dict:
    """The snapshot without anything that belongs to ``source`` (keys named after it, its stream entries,
    its label records)."""
    out = {}
    for k, (t, v) in snapshot.items():
        name = k.decode()
        if t == "stream":
            v = [(i, f) for i, f in v if json.loads(f[b"event"])["source"] != source]
        elif name.endswith(":labels"):
            v = {a: x for a, x in v.items() if json.loads(x)["source"] != source}
        elif (
            name.split(":")[-1] == source
            and ":sources:" not in name
            or f":labels:crops:{source}:" in name
            or t == "hash"
            and v.get(b"source") == source.encode()
        ):
            continue
        out[k] = (t, v)
    return out


@pytest.mark.parametrize("shards", [1, 2])
def test_purge_source_removes_exactly_that_sources_data(r, prefix, shards):
    keys = Keys(prefix, shards=shards)
    now = time.time()
    for s in ("camA", "camB", "fileC-0123abcd"):
        _populate(r, keys, s, now)
    before = _snapshot(r, keys)
    counts = purge_source(r, keys, "camA")
    after = _snapshot(r, keys)
    assert after == _by_source(before, "camA")
    assert counts == {"keys": 6, "results": 1, "alerts": 1, "labels": 1}
    assert r.exists(keys.source("camA"))  # counters, no face data
    assert not any(b"camA" in k for k in after if b":sources:" not in k and b"alert-ids" not in k)
    assert purge_source(r, keys, "camA") == {"keys": 0, "results": 0, "alerts": 0, "labels": 0}  # idempotent
    assert purge_source(r, keys, "cam") == {
        "keys": 0,
        "results": 0,
        "alerts": 0,
        "labels": 0,
    }  # no prefix match
    assert _snapshot(r, keys) == after


def test_purge_before_removes_only_older_data(r, prefix):
    keys = Keys(prefix)
    old = time.time() - 10 * 86400
    _populate(r, keys, "old", old)
    cut = time.time()
    time.sleep(0.01)
    _populate(r, keys, "new", time.time())
    # Stream ids are insertion times: move the old source's entries before the cut, as if written then.
    for stream in (keys.results, keys.alerts):
        entries = r.xrange(stream)
        r.delete(stream)
        for i, f in entries:
            src = json.loads(f[b"event"])["source"]
            r.xadd(stream, f, id=f"{int(old * 1000)}-{len(r.xrange(stream))}" if src == "old" else "*")
    raw = json.loads(r.hget(keys.labels, "old:deepfake:0"))
    r.hset(keys.labels, "old:deepfake:0", json.dumps({**raw, "at": old}))
    counts = purge_before(r, keys, cut)
    assert counts == {"results": 1, "alerts": 1, "crops": 2, "labels": 1, "window": 1}
    left = _snapshot(r, keys)
    assert [json.loads(f[b"event"])["source"] for _i, f in left[keys.results.encode()][1]] == ["new"]
    assert [json.loads(f[b"event"])["source"] for _i, f in left[keys.alerts.encode()][1]] == ["new"]
    assert r.hlen(keys.evidence("new")) == 2 and not r.exists(keys.evidence("old"))
    assert list(r.hgetall(keys.labels)) == [b"new:deepfake:0"]
    assert r.zcard(keys.window("new")) == 1 and not r.exists(keys.window("old"))


def test_purge_cli_prints_counts_and_rejects_a_bad_date(r, redis_url, prefix):
    keys = Keys(prefix)
    _populate(r, keys, "camZ", time.time())
    env = {
        **os.environ,
        "FORENSICS_REDIS__URL": redis_url,
        "FORENSICS_REDIS__PREFIX": prefix,
        "FORENSICS_LOG_LEVEL": "warning",
    }
    proc = subprocess.run([sys.executable, "-m", "forensics.cli", "purge", "--source", "camZ"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"purged": "camZ", "keys": 6, "results": 1, "alerts": 1, "labels": 1}
    proc = subprocess.run([sys.executable, "-m", "forensics.cli", "purge", "--before", "last tuesday"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0 and "ISO date" in proc.stderr
    with pytest.raises(ForensicsError):
        parse_date("2026-13-01")
    assert parse_date("2026-01-01") == parse_date("2026-01-01T00:00+00:00")


def test_documented_acl_keeps_plain_subscribers_away_from_evidence(r, redis_url):
    """The README's `subscriber` ACL, applied to a real redis-server: alerts yes, crops/labels/frames no."""
    import re
    from pathlib import Path

    import redis as redis_mod

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("ACL SETUSER subscriber "))
    args = line.split()[2:]
    args = [re.sub(r"^>SUBSCRIBER_PASSWORD$", ">pw-test", a) for a in args]
    keys = Keys("forensics")
    r.xadd(keys.alerts, {"event": "{}"})
    r.hset(keys.evidence("camA"), "0:0", b"png")
    r.hset("forensics:labels", "a", "{}")
    try:
        r.execute_command("ACL", "SETUSER", *args)
        sub = redis_mod.Redis.from_url(redis_url.replace("redis://", "redis://subscriber:pw-test@"))
        assert len(sub.xrange(keys.alerts)) >= 1 and sub.xlen(keys.results) >= 0
        p = sub.pubsub()
        p.subscribe(keys.alerts)  # the live channel is allowed
        p.close()
        for denied in (lambda: sub.hget(keys.evidence("camA"), "0:0"), lambda: sub.hgetall("forensics:labels"),
                       lambda: sub.xrange(keys.frames), lambda: sub.keys("forensics:*"),
                       lambda: list(sub.scan_iter("forensics:crops:*")), lambda: sub.delete(keys.alerts)):  # fmt: skip
            with pytest.raises(redis_mod.exceptions.NoPermissionError):
                denied()
    finally:
        r.execute_command("ACL", "DELUSER", "subscriber")
        r.delete(keys.alerts, keys.evidence("camA"), "forensics:labels")
