"""Bounded keys (issue 16): what many dropped files leave in Redis is bounded by count or by time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from forensics.config import load_settings
from forensics.streams import Keys, ensure_group, prune_idle_consumers, read_group
from tests.media import write_test_video
from tests.tinymodel import copy_registry
from workers.detect import DetectWorker
from workers.ingest import FileIngest

# Keys that live as long as the deployment, whatever the number of files: each is capped by length.
FIXED = {"frames", "results", "alerts", "dead"}


def _drop_and_score(n, ing, worker, watch, clip, r, keys):
    for i in range(n):
        p = watch / f"f{i:04d}.mp4"
        p.write_bytes(clip.read_bytes())
        ing.process(p)
        while worker.step_new():
            pass


@pytest.mark.slow
def test_keys_after_500_dropped_files_are_bounded(r, redis_url, prefix, tiny_models, tmp_path):
    copy_registry(tiny_models, tmp_path / "models")
    s = load_settings(
        state_dir=tmp_path / "state", models_dir=tmp_path / "models", log_format="json",
        redis={"url": redis_url, "prefix": prefix}, faces={"detector": "none"},
        ingest={"watch_dir": tmp_path / "watch", "frame_size": 16, "sample": "every_nth", "every_nth": 1,
                "batch_size": 4, "source_ttl_s": 3600},
        detect={"providers": ["CPUExecutionProvider"], "block_ms": 1, "evidence_per_file": 4, "read_count": 16},
    )  # fmt: skip
    clip = write_test_video(tmp_path / "clip.mp4", frames=10, fps=30, width=48, height=32, gop=10)
    keys = Keys(prefix)
    ing, worker = FileIngest(s, r), DetectWorker(s, r, consumer="w1")
    worker.load_initial()
    watch = Path(s.ingest.watch_dir)
    t0 = time.monotonic()
    counts = {}
    done = 0
    for n in (20, 80, 400):  # 20 files, then 80 more, then 400: 500 in all
        _drop_and_score(n, ing, worker, watch, clip, r, keys)
        done += n
        all_keys = [k.decode() for k in r.keys(f"{prefix}:*")]
        no_ttl = sorted(k for k in all_keys if r.ttl(k) == -1)
        counts[done] = {"keys": len(all_keys), "without_ttl": no_ttl}
    elapsed = time.monotonic() - t0
    verdicts = [json.loads(f[b"event"]) for _i, f in r.xrange(keys.alerts) if b'"verdict"' in f[b"event"]]
    assert len(verdicts) == 500
    # What has no expiry is the same handful of capped streams after 20, 100 and 500 files.
    assert counts[20]["without_ttl"] == counts[100]["without_ttl"] == counts[500]["without_ttl"]
    assert {k.split(":", 1)[1] for k in counts[500]["without_ttl"]} <= FIXED | {"model"}
    # The rest grows by the same few keys per file (all expiring, checked below), not more.
    per_file = (counts[100]["keys"] - counts[20]["keys"]) / 80
    assert counts[500]["keys"] - counts[100]["keys"] == per_file * 400
    # Everything per file expires within its retention, and evidence is top-k per file.
    for k in r.keys(f"{prefix}:*"):
        name = k.decode()
        if name.split(":", 1)[1] in FIXED:
            continue
        ttl = r.ttl(k)
        assert 0 < ttl <= max(s.ingest.source_ttl_s, s.detect.evidence_ttl_s, 7 * 24 * 3600), name
    src = verdicts[-1]["source"]
    assert r.hlen(keys.evidence(src)) <= 4
    assert not r.keys(f"{prefix}:agg:*") and not r.exists(keys.errors)
    assert r.xlen(keys.frames) == 0  # acknowledged and deleted
    print(json.dumps({"files": 500, "keys_after": {k: v["keys"] for k, v in counts.items()}, "keys_per_file": per_file,
                      "seconds": round(elapsed, 1)}))  # fmt: skip


def test_idle_consumers_without_pending_entries_are_removed(r, prefix):
    keys = Keys(prefix)
    ensure_group(r, keys.frames)
    r.xadd(keys.frames, {"x": "1"})
    read_group(r, keys.frames, "holder", count=1, block_ms=1)  # keeps a pending entry
    for name in ("gone-1", "gone-2", "me"):
        r.xgroup_createconsumer(keys.frames, "detect", name)
    time.sleep(0.05)
    removed = prune_idle_consumers(r, keys.frames, idle_ms=20, keep="me")
    assert sorted(removed) == ["gone-1", "gone-2"]
    assert sorted(c["name"].decode() for c in r.xinfo_consumers(keys.frames, "detect")) == ["holder", "me"]
