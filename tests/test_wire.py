import json

import numpy as np
import pytest

from forensics.errors import WireError
from forensics.wire import SCHEMA_VERSION, FrameBatch, decode, encode


def _batch(n=3, s=8):
    rng = np.random.default_rng(0)
    return FrameBatch(
        source="cam-1",
        seq=7,
        source_kind="live",
        images=rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8),
        frame_index=[0, 5, 10][:n],
        pts=[0.0, None, 0.4][:n],
        wall=[1.5, 2.5, 3.5][:n],
        box=[[1, 2, 30, 40]] * n,
        track=[0, 1, None][:n],
        frame_size=(1280, 720),
        info={"note": "x"},
    )


def test_frame_batch_round_trips_bit_for_bit():
    b = _batch()
    out = decode(encode(b))
    assert np.array_equal(out.images, b.images)
    assert out.images.dtype == np.uint8 and out.images.shape == (3, 8, 8, 3)
    for name in ("source", "seq", "source_kind", "kind", "frame_index", "pts", "wall", "box", "track", "info"):
        assert getattr(out, name) == getattr(b, name), name
    assert out.frame_size == (1280, 720)


def test_eof_marker_round_trips_with_its_totals():
    eof = FrameBatch(source="f", seq=4, kind="eof", info={"batches": 4, "error": "truncated"})
    out = decode(encode(eof))
    assert out.kind == "eof" and len(out) == 0 and out.info["batches"] == 4


def test_header_is_json_and_data_is_raw_bytes():
    fields = encode(_batch(n=2, s=4))
    meta = json.loads(fields["meta"])
    assert meta["shape"] == [2, 4, 4, 3] and meta["dtype"] == "uint8"
    assert len(fields["data"]) == 2 * 4 * 4 * 3
    assert fields["v"] == str(SCHEMA_VERSION).encode()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.pop("data"), "missing field"),
        (lambda f: f.update(v=b"99"), "schema version 99"),
        (lambda f: f.update(v=b"abc"), "not an integer"),
        (lambda f: f.update(meta=b"{not json"), "not valid JSON"),
        (lambda f: f.update(meta=b"[1,2]"), "not a JSON object"),
        (lambda f: f.update(data=f["data"][:-1]), "bytes"),
        (lambda f: f.update(meta=f["meta"].replace(b'"seq":7', b'"seq":-1')), "seq"),
        (lambda f: f.update(meta=f["meta"].replace(b'"source":"cam-1",', b"")), "lacks 'source'"),
        (lambda f: f.update(meta=f["meta"].replace(b'"dtype":"uint8"', b'"dtype":"float64"')), "dtype"),
        (lambda f: f.update(meta=f["meta"].replace(b'"track":[0,1,null]', b'"track":[0]')), "track"),
        # found by bench/fuzz_wire.py: a null (or any non-list) landmarks raised TypeError, not WireError
        (lambda f: f.update(meta=f["meta"].replace(b'"landmarks":[null,null,null]', b'"landmarks":null')), "landmarks"),
        (lambda f: f.update(meta=f["meta"].replace(b'"landmarks":[null,null,null]', b'"landmarks":0')), "landmarks"),
    ],
)
def test_malformed_message_raises_a_specific_error(mutate, message):
    fields = {k: v for k, v in encode(_batch()).items()}
    mutate(fields)
    with pytest.raises(WireError, match=message):
        decode(fields)


def test_foreign_message_with_pickle_payload_is_rejected_not_unpickled():
    import pickle

    fields = {b"v": b"1", b"meta": pickle.dumps({"a": 1}), b"data": b""}
    with pytest.raises(WireError):
        decode(fields)


def test_landmarks_round_trip_and_batches_without_them_decode():
    b = _batch()
    b.landmarks = [[[10.5, 20.25], [30.0, 20.0], [20.0, 30.0], [12.0, 40.0], [28.0, 40.0]], None, [[1, 2]]]
    out = decode(encode(b))
    assert out.landmarks == b.landmarks
    # Written without landmarks: None for each image.
    assert decode(encode(_batch())).landmarks == [None, None, None]


def test_a_schema_1_batch_without_landmarks_still_decodes():
    fields = encode(_batch())
    meta = json.loads(fields["meta"])
    del meta["landmarks"]  # exactly what a version 1 writer put in the header
    v1 = {b"v": b"1", b"meta": json.dumps(meta).encode(), b"data": fields["data"]}
    out = decode(v1)
    assert out.landmarks == [None, None, None] and out.track == [0, 1, None] and out.box == [[1, 2, 30, 40]] * 3


@pytest.mark.parametrize(
    "landmarks",
    [[None], [[[1.0, 2.0]], None, [[1.0]]], [[[1.0, float("nan")]], None, None], [[[True, 1.0]], None, None]],
    ids=["wrong-count", "not-a-pair", "nan", "bool"],
)
def test_malformed_landmarks_are_rejected(landmarks):
    b = _batch()
    b.landmarks = landmarks
    with pytest.raises(WireError, match="landmarks"):
        encode(b)
