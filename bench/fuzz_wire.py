"""Coverage-guided fuzzing (atheris, libFuzzer) of what the detect worker does with one stream entry
before and after it touches Redis; prints JSON.

Per input: the wire decoder (``forensics.wire.decode``) either returns a batch or raises
``WireError``; the dead-letter path's header parse (``workers.detect._file_batch_of``) never
raises; a batch that decodes re-encodes, its crops become records (``crop_records``) that
survive the JSON round trip of the aggregation store, and its end-of-file totals make a verdict
alert (``file_verdict``, ``make_alert``) and a live batch a window decision (``window_decision``)
that serialise as strict JSON. Any other exception is a crash: libFuzzer stops and writes the
input under --artifacts.

Inputs are stream fields framed as ``mode`` byte + payload: mode 0 is raw ``v``/``meta``/``data``
bytes split by a separator (the seeds are valid batches of every kind and the four poison entries
of issue 16, so byte-level mutation starts from real headers); mode 1 lets the fuzzer's bytes
pick a valid batch and replace, retype or drop header fields and elements (structure-aware).

    python bench/fuzz_wire.py --seconds 20      # the CI run (tests/test_poison.py)
    python bench/fuzz_wire.py --seconds 600     # longer, by hand

The parent process runs libFuzzer in a child and reports its final statistics: executions,
crashes (0 or 1: libFuzzer stops at the first), peak RSS, and the path of a crashing input.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEP = b"\x00\xff|"
MODE_RAW, MODE_STRUCT = 0, 1
META_KEYS = ["source", "seq", "source_kind", "kind", "shape", "dtype", "frame_index", "pts", "wall", "box", "track",
             "landmarks", "frame_size", "info"]  # fmt: skip
INFO_KEYS = ["batches", "frames_decoded", "frames_sampled", "no_face_frames", "file", "error"]


def _seed_batches() -> list:
    import numpy as np

    from forensics.wire import FrameBatch

    rng = np.random.default_rng(0)

    def frames(n: int, side: int, kind: str, marks: bool) -> FrameBatch:
        return FrameBatch(
            source=f"seed-{kind}", seq=3, source_kind=kind, images=rng.integers(0, 256, (n, side, side, 3), np.uint8),
            frame_index=list(range(0, 2 * n, 2)), pts=[None if i == 1 else i / 10 for i in range(n)],
            wall=[1.7e9 + i for i in range(n)], box=[[1, 2, 3 + side, 4 + side]] * n,
            track=[i if kind == "file" else None for i in range(n)], frame_size=(640, 480),
            landmarks=[[[1.5, 2.0]] * 5 if marks and i % 2 == 0 else None for i in range(n)] if marks else [],
            info={"note": "seed"},
        )  # fmt: skip

    eof = {"file": "seed.mp4", "batches": 2, "frames_decoded": 30, "frames_sampled": 6, "no_face_frames": 1}
    return [
        frames(3, 4, "file", False), frames(2, 2, "live", True), frames(1, 1, "file", True),
        FrameBatch(source="seed-file", seq=4, kind="eof", info=eof),
        FrameBatch(source="seed-file", seq=4, kind="eof", info={"batches": 0, "error": "truncated"}),
    ]  # fmt: skip


def _frame(fields: dict[str, bytes]) -> bytes:
    return bytes([MODE_RAW]) + fields["v"] + SEP + fields["meta"] + SEP + fields["data"]


def _seeds() -> list[bytes]:
    from forensics.wire import encode

    out = [_frame(encode(b)) for b in _seed_batches()]
    poison = [(0, "shape", [3, 4, 2, 3]), (0, "pts", [float("nan"), 0.1, 0.2]), (3, "info", {"batches": "many"}),
              (1, "wall", ["abc"])]  # fmt: skip
    for i, key, value in poison:  # the four poison entries of issue 16, as a foreign writer makes them
        fields = encode(_seed_batches()[i])
        meta = json.loads(fields["meta"])
        meta[key] = value
        out.append(_frame({**fields, "meta": json.dumps(meta).encode()}))
    out += [bytes([MODE_STRUCT]) + bytes(range(i, i + 24)) for i in range(0, 200, 40)]
    return out


def _value(fdp, depth: int = 0):
    """A JSON-ish value chosen by the fuzzer's bytes (NaN and infinities included)."""
    pick = fdp.ConsumeIntInRange(0, 9 if depth < 2 else 6)
    if pick == 0:
        return None
    if pick == 1:
        return fdp.ConsumeBool()
    if pick == 2:
        return fdp.ConsumeIntInRange(-(2**70), 2**70)
    if pick == 3:
        return fdp.ConsumeIntInRange(-2, 70000)
    if pick == 4:
        return fdp.ConsumeFloat()  # any double: NaN, +-inf, subnormals
    if pick == 5:
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 12))
    if pick == 6:
        return fdp.PickValueInList(["frames", "eof", "file", "live", "uint8", "", "NaN"])
    if pick in (7, 8):
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 5))]
    return {fdp.PickValueInList(INFO_KEYS + ["x"]): _value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))}


def _structured(fdp, batches: list) -> dict[bytes, bytes]:
    from forensics.wire import encode

    fields = encode(fdp.PickValueInList(batches))
    meta = json.loads(fields["meta"])
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        key = fdp.PickValueInList(META_KEYS)
        how = fdp.ConsumeIntInRange(0, 4)
        if how == 0:
            meta.pop(key, None)
        elif how == 1 or not isinstance(meta.get(key), (list, dict)) or not meta[key]:
            meta[key] = _value(fdp)
        elif isinstance(meta[key], dict):  # info: one total retyped
            meta[key][fdp.PickValueInList(INFO_KEYS)] = _value(fdp)
        elif how == 2:  # one element of a per-image list
            meta[key][fdp.ConsumeIntInRange(0, len(meta[key]) - 1)] = _value(fdp)
        elif how == 3:  # one list grows or shrinks: its length no longer matches the images
            meta[key] = meta[key][:-1] if fdp.ConsumeBool() else meta[key] + [_value(fdp)]
        else:  # one number inside a nested list (box coordinate, landmark)
            inner = meta[key][fdp.ConsumeIntInRange(0, len(meta[key]) - 1)]
            if isinstance(inner, list) and inner:
                inner[fdp.ConsumeIntInRange(0, len(inner) - 1)] = _value(fdp)
    data = fields["data"]
    cut = fdp.ConsumeIntInRange(0, 3)
    data = data if cut == 0 else data[: len(data) // 2] if cut == 1 else data + b"\x00" * cut
    v = fdp.PickValueInList([b"2", b"2", b"1", b"3", b"x"])
    return {b"v": v, b"meta": json.dumps(meta).encode(errors="surrogatepass"), b"data": data}


def _fields(data: bytes, batches: list) -> dict[bytes, bytes]:
    import atheris

    if not data:
        return {}
    if data[0] % 2 == MODE_STRUCT:
        return _structured(atheris.FuzzedDataProvider(data[1:]), batches)
    parts = data[1:].split(SEP, 2)
    return dict(zip((b"v", b"meta", b"data"), parts))


def check_entry(fields: dict[bytes, bytes], good_records: list) -> None:
    """Everything the worker does with one entry that does not need Redis or the model."""
    import numpy as np

    from forensics.alerts import evidence_field, make_alert
    from forensics.errors import WireError
    from forensics.model import CropScores
    from forensics.streams import Entry
    from forensics.verdicts import CropRecord, file_verdict, window_decision
    from forensics.wire import decode, encode
    from workers.detect import _file_batch_of, crop_records

    lost = _file_batch_of(Entry(b"1-0", fields))  # the dead-letter path's view of the same header
    assert lost is None or (isinstance(lost[0], str) and isinstance(lost[1], int))
    try:
        b = decode(fields)
    except WireError:
        return
    encode(b)  # what decodes is valid: it re-encodes
    n = len(b)
    prob = b.images.reshape(n, -1).mean(axis=1) / 255.0 if n else np.zeros(0)
    scores = CropScores(prob, prob * 10.0, prob > 0.5)
    records = crop_records(b, scores)
    stored = json.dumps([r.to_json() for r in records], allow_nan=False)
    again = [CropRecord.from_json(v) for v in json.loads(stored)]
    assert [evidence_field(r.frame, r.track) for r in again] == [evidence_field(r.frame, r.track) for r in records]
    if b.kind == "eof" and b.source_kind == "file":
        verdict = file_verdict(good_records + again, threshold=0.5, eof=b.info, track_anomaly_threshold=3.0)
        json.dumps(make_alert("verdict", b.source, f"{b.source}:verdict", **verdict), allow_nan=False)
    elif b.source_kind == "live" and records:
        d = window_decision([r.prob for r in records], [r.anomalous for r in records], {}, threshold=0.5, margin=0.05,
                            min_faces=1, anomaly_rate=0.3, scores=[r.anomaly for r in records], track_threshold=3.0)  # fmt: skip
        json.dumps({"window": [d.mean_prob, d.anomaly_rate, d.faces], "wall": max(b.wall)}, allow_nan=False)


def _child(args) -> None:
    import atheris

    with atheris.instrument_imports(include=["forensics.wire", "forensics.verdicts", "workers.detect"]):
        import workers.detect  # noqa: F401 - imports and so instruments the other two
    batches = _seed_batches()
    good = _good_records(batches)

    def one(data: bytes) -> None:
        check_entry(_fields(data, batches), good)

    corpus = Path(args.corpus)
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(_seeds()):
        (corpus / f"seed-{i:02d}").write_bytes(seed)
    atheris.Setup([sys.argv[0], str(corpus), f"-max_total_time={args.seconds}", "-print_final_stats=1",
                   f"-artifact_prefix={args.artifacts}/", "-timeout=10", "-rss_limit_mb=2048",
                   f"-seed={args.seed}", "-max_len=4096"], one)  # fmt: skip
    atheris.Fuzz()


def _good_records(batches: list) -> list:
    import numpy as np

    from forensics.model import CropScores
    from workers.detect import crop_records

    b = batches[0]
    p = np.linspace(0.1, 0.9, len(b))
    return crop_records(b, CropScores(p, p * 4, p > 0.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--artifacts", default=None, help="folder for a crashing input (default: a temp folder)")
    ap.add_argument("--corpus", default=None, help="corpus folder, kept between runs (default: a temp folder)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
        return
    work = Path(tempfile.mkdtemp(prefix="fuzz-wire-"))
    args.artifacts = args.artifacts or str(work / "artifacts")
    args.corpus = args.corpus or str(work / "corpus")
    Path(args.artifacts).mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--child", "--seconds", str(args.seconds), "--seed", str(args.seed),
           "--artifacts", args.artifacts, "--corpus", args.corpus]  # fmt: skip
    t0 = time.monotonic()
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, errors="replace",
                          timeout=args.seconds + 120)  # fmt: skip
    log = proc.stdout + proc.stderr
    stats = {k: int(v) for k, v in re.findall(r"stat::(\w+):\s+(\d+)", log)}
    crash = sorted(str(p) for p in Path(args.artifacts).iterdir())
    out = {
        "bench": "fuzz_wire",
        "seconds": args.seconds,
        "wall_s": round(time.monotonic() - t0, 1),
        "executions": stats.get("number_of_executed_units", 0),
        "exec_per_s": stats.get("average_exec_per_sec", 0),
        "new_coverage_units": stats.get("new_units_added", 0),
        "peak_rss_mb": stats.get("peak_rss_mb", 0),
        "seeds": len(_seeds()),
        "crashes": len(crash) or int(proc.returncode != 0),
        "crash_inputs": crash,
        "exit_status": proc.returncode,
    }
    if out["crashes"]:
        out["log_tail"] = log[-4000:]
    print(json.dumps(out, indent=1))
    sys.exit(1 if out["crashes"] else 0)


if __name__ == "__main__":
    main()
