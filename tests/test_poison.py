"""Poison isolation (issue 16): one malformed entry never costs another entry its verdict.

Real redis-server, the real wire codec, a real (small, untrained) ONNX model version.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from forensics.config import load_settings
from forensics.errors import WireError
from forensics.streams import Keys, backlog, ensure_group, read_group
from forensics.wire import FrameBatch, decode, encode
from tests.conftest import ROOT
from tests.tinymodel import copy_registry
from workers.detect import DetectWorker

SIZE = 16


@pytest.fixture
def psettings(tmp_path, redis_url, prefix, tiny_models):
    copy_registry(tiny_models, tmp_path / "models")
    return load_settings(
        state_dir=tmp_path / "state", models_dir=tmp_path / "models", log_format="json",
        redis={"url": redis_url, "prefix": prefix},
        detect={"claim_idle_ms": 300, "max_deliveries": 2, "block_ms": 50, "read_count": 16,
                "providers": ["CPUExecutionProvider"]},
    )  # fmt: skip


def _good(source: str, n: int = 3, seq: int = 0, kind: str = "file") -> FrameBatch:
    rng = np.random.default_rng(seq)
    return FrameBatch(
        source=source, seq=seq, source_kind=kind, images=rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8),
        frame_index=list(range(n)), pts=[i / 10 for i in range(n)], wall=[time.time()] * n,
        box=[[0, 0, 10, 10]] * n, track=[0] * n, frame_size=(64, 48),
    )  # fmt: skip


def _tamper(fields: dict, **meta_changes) -> dict:
    """Fields with the JSON header changed as a foreign writer would (json.dumps allows NaN)."""
    meta = json.loads(fields["meta"])
    meta.update(meta_changes)
    return {**fields, "meta": json.dumps(meta).encode()}


def _poison_entries() -> dict[str, tuple[dict, str]]:
    """The four poison entries of issue 16 and the one the atheris fuzzer found (a null landmarks
    list, which raised TypeError past the decoder), with the words their dead letters must carry."""
    sq = _good("p-square")
    sq_fields = encode(sq)
    sq_fields = _tamper(sq_fields, shape=[3, SIZE, SIZE // 2, 3])
    sq_fields["data"] = sq_fields["data"][: 3 * SIZE * (SIZE // 2) * 3]
    eof = FrameBatch(source="p-many", seq=0, kind="eof", info={"batches": 0})
    return {
        "p-square": (sq_fields, "square"),
        "p-nan": (_tamper(encode(_good("p-nan")), pts=[float("nan"), 0.1, 0.2]), "NaN"),
        "p-many": (_tamper(encode(eof), info={"batches": "many"}), "info.batches"),
        "p-wall": (_tamper(encode(_good("p-wall", n=1, kind="live")), wall=["abc"]), "wall"),
        "p-marks": (_tamper(encode(_good("p-marks")), landmarks=None), "landmarks"),
    }


def _verdicts(r, prefix):
    return [json.loads(f[b"event"]) for _i, f in r.xrange(Keys(prefix).alerts) if b'"kind":"verdict"' in f[b"event"]]


def _wait(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("name", ["p-square", "p-nan", "p-many", "p-wall", "p-marks"])
def test_each_poison_entry_is_refused_by_the_decoder_with_a_clear_error(name):
    fields, words = _poison_entries()[name]
    with pytest.raises(WireError, match=words):
        decode({k.encode(): v for k, v in fields.items()})


def test_poison_entries_are_dead_lettered_with_their_errors_and_the_good_file_in_the_same_read_gets_its_verdict(
    r, psettings
):
    keys = Keys(psettings.redis.prefix)
    ensure_group(r, keys.frames)
    poison = _poison_entries()
    ids = {}
    # One read holds all of them: the good file's two batches and end marker between the poisons.
    ids["p-square"] = r.xadd(keys.frames, poison["p-square"][0])
    r.xadd(keys.frames, encode(_good("good-1", seq=0)))
    ids["p-nan"] = r.xadd(keys.frames, poison["p-nan"][0])
    r.xadd(keys.frames, encode(_good("good-1", seq=1)))
    ids["p-many"] = r.xadd(keys.frames, poison["p-many"][0])
    r.xadd(keys.frames, encode(FrameBatch(source="good-1", seq=2, kind="eof", info={"file": "good.mp4", "batches": 2})))
    ids["p-wall"] = r.xadd(keys.frames, poison["p-wall"][0])
    ids["p-marks"] = r.xadd(keys.frames, poison["p-marks"][0])
    worker = DetectWorker(psettings, r, consumer="w1")
    stop = threading.Event()
    t = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    t.start()
    try:
        assert _wait(lambda: r.xlen(keys.dead) >= len(poison), 30)
        assert t.is_alive()  # the worker stayed up through all of them
    finally:
        stop.set()
        t.join(20)
    (verdict,) = _verdicts(r, psettings.redis.prefix)
    assert verdict["file"] == "good.mp4" and verdict["faces_scored"] == 6 and verdict["label"] in ("REAL", "FAKE")
    dead = {f[b"origin"].decode().rsplit("/", 1)[1]: f for _i, f in r.xrange(keys.dead)}
    assert len(dead) == len(poison)
    for name, entry_id in ids.items():
        d = dead[entry_id.decode()]
        assert poison[name][1] in d[b"error"].decode(), (name, d[b"error"])
        assert int(d[b"deliveries"]) == 3  # max_deliveries=2, dead on the third delivery
        assert b"data" not in d and int(d[b"data_bytes"]) == len(poison[name][0]["data"])
        assert json.loads(d[b"meta"].decode().replace("NaN", "null"))["source"] == name
    assert backlog(r, keys.frames) == 0 and worker.stats["dead"] == len(poison)
    assert not r.exists(Keys(psettings.redis.prefix).errors)  # recorded errors are cleaned up


def test_a_file_whose_batch_was_dead_lettered_still_gets_one_verdict_counting_the_lost_batch(r, psettings):
    keys = Keys(psettings.redis.prefix)
    ensure_group(r, keys.frames)
    r.xadd(keys.frames, encode(_good("f-2", seq=0)))
    bad = _tamper(encode(_good("f-2", seq=1)), pts=[0.0, float("inf"), 0.2])
    r.xadd(keys.frames, bad)
    r.xadd(keys.frames, encode(FrameBatch(source="f-2", seq=2, kind="eof", info={"file": "f2.mp4", "batches": 2})))
    worker = DetectWorker(psettings, r, consumer="w1")
    stop = threading.Event()
    t = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    t.start()
    try:
        assert _wait(lambda: len(_verdicts(r, psettings.redis.prefix)) == 1, 30)
    finally:
        stop.set()
        t.join(20)
    (v,) = _verdicts(r, psettings.redis.prefix)
    assert v["faces_scored"] == 3 and v["batches_lost"] == 1 and "Infinity" in v["lost_error"]
    assert r.xlen(keys.dead) == 1


def test_dead_letter_stream_is_capped(r, psettings):
    from forensics.streams import Entry, dead_letter

    keys = Keys(psettings.redis.prefix)
    for i in range(400):
        dead_letter(r, keys, Entry(f"{i + 1}-0".encode(), {b"v": b"1", b"meta": b"{}", b"data": b"x" * 100}), "e",
                    maxlen=100)  # fmt: skip
    assert 100 <= r.xlen(keys.dead) < 200


# ---- fuzzing the wire format --------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
# Values a foreign writer gets wrong most often: null, empty, zero, a string, a float where an int goes.
_odd = st.sampled_from([None, 0, "", {}, [], False, "abc", "many", -1, 2.5, 1e308, float("nan"), float("inf")])
_value = st.one_of(_odd, _json)
_META_KEYS = ["source", "seq", "source_kind", "kind", "shape", "dtype", "frame_index", "pts", "wall", "box", "track",
              "landmarks", "frame_size", "info"]  # fmt: skip
_INFO_KEYS = ["batches", "frames_decoded", "frames_sampled", "no_face_frames", "file", "error"]


@st.composite
def wire_fields(draw) -> dict[bytes, bytes]:
    """Stream fields: a valid batch with some header fields replaced, dropped or retyped, some
    data cut or grown, or bytes that are no FrameBatch at all."""
    n = draw(st.integers(0, 3))
    kind = draw(st.sampled_from(["frames", "eof"]))
    base = _good("fz", n=max(n, 1)) if kind == "frames" else FrameBatch(source="fz", seq=1, kind="eof",
                                                                          info={"batches": 1})  # fmt: skip
    if n and draw(st.booleans()):
        base.landmarks = [[[1.0, 2.0]] * 5] * len(base)
    fields = {k.encode(): v for k, v in encode(base).items()}
    meta = json.loads(fields[b"meta"])
    for key in draw(st.lists(st.sampled_from(_META_KEYS), max_size=3)):
        how = draw(st.sampled_from(["replace", "drop", "element", "info"]))
        if how == "drop":
            meta.pop(key, None)
        elif how == "element" and isinstance(meta.get(key), list) and meta[key]:  # one item: NaN, "abc", 1.5...
            meta[key][draw(st.integers(0, len(meta[key]) - 1))] = draw(_value)
        elif how == "info":  # one end-of-file total retyped ("many", -1, 2.5, null)
            meta["info"] = {**(meta.get("info") if isinstance(meta.get("info"), dict) else {}),
                            draw(st.sampled_from(_INFO_KEYS)): draw(_value)}  # fmt: skip
        else:
            meta[key] = draw(_value)
    fields[b"meta"] = json.dumps(meta).encode()
    # Most examples keep the frame valid around the header changes, so those reach the field checks.
    garble = draw(st.integers(0, 9))
    if garble == 0:
        fields[b"meta"] = draw(st.binary(max_size=40))
    elif garble == 1:
        fields[b"data"] = draw(st.one_of(st.binary(max_size=64), st.just(fields[b"data"][: len(fields[b"data"]) // 2])))
    elif garble == 2:
        fields[b"v"] = draw(st.sampled_from([b"1", b"3", b"x", b""]))  # 1: an old writer, without landmarks
    elif garble == 3:
        fields.pop(draw(st.sampled_from([b"v", b"meta", b"data"])))
    return fields


@hsettings(max_examples=400, deadline=None)
@given(wire_fields())
def test_decoder_returns_a_batch_or_raises_wire_error_for_any_input(fields):
    try:
        batch = decode(fields)
    except WireError:
        return
    encode(batch)  # what decodes is valid: it re-encodes without error (finite, typed, square)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(wire_fields(), min_size=1, max_size=4))
def test_no_input_crashes_the_worker_step(r, psettings, batch):
    keys = Keys(psettings.redis.prefix)
    ensure_group(r, keys.frames)
    worker = _fuzz_worker(psettings, r)
    for fields in batch:
        r.xadd(keys.frames, fields)
    entries = read_group(r, keys.frames, "fuzz", count=16, block_ms=10)
    worker.process(entries)  # must not raise
    errors = r.hgetall(Keys(psettings.redis.prefix).errors)
    for e in entries:  # each entry is either acknowledged (gone) or pending with its error recorded
        assert e.id in errors or not r.xrange(keys.frames, e.id, e.id)


_WORKERS: dict[str, DetectWorker] = {}


def _fuzz_worker(psettings, r) -> DetectWorker:
    key = psettings.redis.prefix
    if key not in _WORKERS:
        _WORKERS.clear()
        _WORKERS[key] = DetectWorker(psettings, r, consumer="fuzz")
        _WORKERS[key].load_initial()
    return _WORKERS[key]


@pytest.mark.slow
def test_coverage_guided_fuzzing_of_the_wire_decoder_and_entry_checks_finds_no_crash(tmp_path):
    """atheris (libFuzzer) for 20 s over bench/fuzz_wire.py: decoder, dead-letter header parse,
    records, verdict and window decision of every input; a crash leaves its input in artifacts/."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz_wire.py"), "--seconds", "20",
                           "--artifacts", str(tmp_path / "artifacts"), "--corpus", str(tmp_path / "corpus")],
                          capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)  # fmt: skip
    out = json.loads(proc.stdout)
    print(json.dumps({k: out[k] for k in ("executions", "exec_per_s", "new_coverage_units", "crashes")}))
    assert out["crashes"] == 0 and proc.returncode == 0, out.get("log_tail", proc.stderr[-3000:])
    assert out["executions"] > out["seeds"]  # it ran past the seed corpus
