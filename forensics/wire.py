"""The one wire codec: FrameBatch <-> Redis stream fields. No pickle, ever.

A stream entry has three fields:

- ``v``: schema version (ASCII integer),
- ``meta``: UTF-8 JSON header (source, sequence, per-image frame index, pts, wall time, box, track,
  landmarks, and optionally region),
- ``data``: raw uint8 bytes of the images, C order, shape ``[N, S, S, 3]`` (RGB).

An end-of-file marker is a FrameBatch of kind ``eof`` with no images; its ``info`` carries the
file's totals (batches written, frames decoded and sampled) and, for a file that broke
mid-way, an ``error``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import numpy as np

from forensics.errors import WireError

SCHEMA_VERSION = 2  # 2 added per-image landmarks; version 1 batches still decode (landmarks None)
READABLE_VERSIONS = (1, 2)
MAX_LANDMARKS = 512  # points per image
MAX_IMAGES = 4096
MAX_SIDE = 4096

Kind = Literal["frames", "eof"]
SourceKind = Literal["file", "live"]


@dataclass
class FrameBatch:
    """A batch of images from one source.

    images: uint8 [N, S, S, 3] RGB (whole frames resized, or square face crops).
    frame_index[i], pts[i] (seconds, None when the stream has none), wall[i] (unix seconds when
    decoded), box[i] ([x0, y0, x1, y1] in source pixels, the crop's region), track[i] (face track
    id, None for whole frames) describe image i. landmarks[i] is None or [[x, y], ...] floats in
    source pixels (five points in ``forensics.faces.LANDMARK_NAMES`` order from detectors that have
    them); an empty ``landmarks`` list means None for every image. region[i] is the square of the
    source frame crop i was resized from ([x0, y0, x1, y1], the face box plus margin; the quality
    gate maps the codec's 8x8 grid through it); optional: an empty list means unknown (batches
    written before issue 17, whose decoders ignore the field).
    """

    source: str
    seq: int
    source_kind: SourceKind = "file"
    kind: Kind = "frames"
    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 3), np.uint8))
    frame_index: list[int] = field(default_factory=list)
    pts: list[float | None] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    box: list[list[int]] = field(default_factory=list)
    track: list[int | None] = field(default_factory=list)
    landmarks: list[list[list[float]] | None] = field(default_factory=list)
    region: list[list[int]] = field(default_factory=list)
    frame_size: tuple[int, int] = (0, 0)  # source (width, height)
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def encode(batch: FrameBatch) -> dict[str, bytes]:
    """Fields for XADD. Validates the batch so a bad one never reaches the stream."""
    _check_batch(batch)
    images = np.ascontiguousarray(batch.images, dtype=np.uint8)
    meta = {
        "source": batch.source,
        "seq": batch.seq,
        "source_kind": batch.source_kind,
        "kind": batch.kind,
        "shape": list(images.shape),
        "dtype": "uint8",
        "frame_index": batch.frame_index,
        "pts": batch.pts,
        "wall": batch.wall,
        "box": batch.box,
        "track": batch.track,
        "landmarks": batch.landmarks or [None] * len(images),
        **({"region": batch.region} if batch.region else {}),
        "frame_size": list(batch.frame_size),
        "info": batch.info,
    }
    return {
        "v": str(SCHEMA_VERSION).encode(),
        "meta": json.dumps(meta, separators=(",", ":"), allow_nan=False).encode(),
        "data": images.tobytes(),
    }


def decode(fields: Mapping[bytes | str, bytes]) -> FrameBatch:
    """Parse stream fields into a FrameBatch, or raise WireError saying what is wrong."""
    f = {(k.decode(errors="replace") if isinstance(k, bytes) else str(k)): v for k, v in fields.items()}
    missing = {"v", "meta", "data"} - f.keys()
    if missing:
        raise WireError(f"not a FrameBatch: missing field(s) {', '.join(sorted(missing))}")
    try:
        version = int(f["v"])
    except (TypeError, ValueError):
        raise WireError(f"not a FrameBatch: schema version {f['v']!r} is not an integer") from None
    if version not in READABLE_VERSIONS:
        raise WireError(f"FrameBatch schema version {version} is not supported (expected one of {READABLE_VERSIONS})")
    try:
        meta = json.loads(f["meta"], parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, NaN, huge ints
        raise WireError(f"FrameBatch header is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise WireError("FrameBatch header is not a JSON object")
    try:
        shape = tuple(_list(meta["shape"], "shape"))
        if not all(_is_int(x) and 0 <= x <= MAX_SIDE * MAX_IMAGES for x in shape):
            raise WireError(f"FrameBatch shape {list(shape)} must hold non-negative integers")
        if meta.get("dtype") != "uint8":
            raise WireError(f"FrameBatch dtype {meta.get('dtype')!r} is not uint8")
        if len(shape) != 4 or shape[3] != 3:
            raise WireError(f"FrameBatch shape {list(shape)} is not [N, S, S, 3]")
        data = f["data"]
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise WireError("FrameBatch data must be bytes")
        if len(data) != math.prod(shape):
            raise WireError(f"FrameBatch data has {len(data)} bytes, shape {list(shape)} needs {math.prod(shape)}")
        batch = FrameBatch(
            source=meta["source"],
            seq=meta["seq"],
            source_kind=meta["source_kind"],
            kind=meta["kind"],
            images=np.frombuffer(data, dtype=np.uint8).reshape(shape),
            frame_index=meta["frame_index"],
            pts=meta["pts"],
            wall=meta["wall"],
            box=meta["box"],
            track=meta["track"],
            landmarks=meta["landmarks"] if version >= 2 else [None] * shape[0],
            region=meta.get("region") or [],
            frame_size=tuple(_list(meta["frame_size"], "frame_size")),
            info=meta["info"],
        )
    except KeyError as err:
        raise WireError(f"FrameBatch header lacks {err.args[0]!r}") from None
    except (TypeError, ValueError, OverflowError) as err:
        raise WireError(f"FrameBatch header is malformed: {err}") from None
    _check_batch(batch)
    return batch


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number (JSON has no NaN or Infinity)")


def _list(value: Any, name: str) -> list:
    if not isinstance(value, list):
        raise WireError(f"FrameBatch {name} must be a list, got {type(value).__name__}")
    return value


def _check_batch(b: FrameBatch) -> None:
    """Check the type and range of every field; raise WireError naming the first bad one.

    A batch that passes can be scored, aggregated and published (JSON without NaN) without
    raising: the detect worker relies on that to isolate a bad entry from good ones.
    """
    if not isinstance(b.source, str) or not b.source or len(b.source) > MAX_SOURCE_LEN:
        raise WireError(f"FrameBatch source must be a non-empty string of at most {MAX_SOURCE_LEN} characters")
    if not _is_int(b.seq) or b.seq < 0:
        raise WireError(f"FrameBatch seq must be a non-negative integer, got {b.seq!r}")
    if b.kind not in ("frames", "eof"):
        raise WireError(f"FrameBatch kind {b.kind!r} is not frames or eof")
    if b.source_kind not in ("file", "live"):
        raise WireError(f"FrameBatch source_kind {b.source_kind!r} is not file or live")
    if not isinstance(b.info, dict):
        raise WireError("FrameBatch info must be an object")
    if not isinstance(b.images, np.ndarray) or b.images.dtype != np.uint8:
        raise WireError("FrameBatch images must be a uint8 array")
    shape = b.images.shape
    if b.images.ndim != 4 or shape[3] != 3:
        raise WireError(f"FrameBatch images shape {list(shape)} is not [N, S, S, 3]")
    n = shape[0]
    if n > MAX_IMAGES or max(shape[1], shape[2]) > MAX_SIDE:
        raise WireError(f"FrameBatch images shape {list(shape)} is over the limits")
    if n and (shape[1] != shape[2] or shape[1] < 1):
        raise WireError(f"FrameBatch crops are {shape[1]}x{shape[2]}: crops must be square and non-empty")
    if b.kind == "eof" and n:
        raise WireError("an end-of-file marker carries no images")
    if b.kind == "frames" and not n:
        raise WireError("a frames batch carries at least one image")
    for name in ("frame_index", "pts", "wall", "box", "track"):
        value = getattr(b, name)
        if not isinstance(value, list) or len(value) != n:
            raise WireError(f"FrameBatch {name} must be a list of {n} items")
    if not isinstance(b.landmarks, list) or (b.landmarks and len(b.landmarks) != n):
        raise WireError(f"FrameBatch landmarks must be a list of {n} items (or empty)")
    for marks in b.landmarks:
        if marks is not None and not _is_points(marks):
            raise WireError(f"FrameBatch landmarks {str(marks)[:60]} are not [[x, y], ...] finite numbers")
    if b.region and (not isinstance(b.region, list) or len(b.region) != n):
        raise WireError(f"FrameBatch region must be a list of {n} items")
    for name, boxes in (("box", b.box), ("region", b.region)):
        for box in boxes:
            if not (isinstance(box, list) and len(box) == 4 and all(_is_int(v) and abs(v) <= _MAX_COORD for v in box)):
                raise WireError(f"FrameBatch {name} {box!r} is not [x0, y0, x1, y1] integers")
    if not all(_is_int(i) and 0 <= i <= _MAX_COUNT for i in b.frame_index):
        raise WireError("FrameBatch frame_index must hold non-negative integers")
    if not all(t is None or (_is_int(t) and abs(t) <= _MAX_COUNT) for t in b.track):
        raise WireError("FrameBatch track must hold integers or nulls")
    if not all(p is None or _is_finite(p) for p in b.pts):
        raise WireError(f"FrameBatch pts must hold finite numbers (seconds) or nulls, got {_first_bad(b.pts, True)!r}")
    if not all(_is_finite(w) for w in b.wall):
        raise WireError(f"FrameBatch wall must hold finite numbers (unix seconds), got {_first_bad(b.wall, False)!r}")
    if not (
        isinstance(b.frame_size, tuple) and len(b.frame_size) == 2
        and all(_is_int(v) and 0 <= v <= _MAX_COORD for v in b.frame_size)
    ):  # fmt: skip
        raise WireError(f"FrameBatch frame_size {b.frame_size!r} is not (width, height)")
    _check_info(b)


def _is_points(marks: object) -> bool:
    return (
        isinstance(marks, list)
        and 0 < len(marks) <= MAX_LANDMARKS
        and all(
            isinstance(p, list)
            and len(p) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p)
            for p in marks
        )
    )


# End-of-file totals the detect worker counts with; each must be a non-negative integer.
_EOF_COUNTS = ("batches", "frames_decoded", "frames_sampled", "no_face_frames")
_MAX_COUNT = 2**53  # exact in a JSON double
_MAX_COORD = 1 << 20
MAX_SOURCE_LEN = 200


def _check_info(b: FrameBatch) -> None:
    try:
        json.dumps(b.info, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise WireError(f"FrameBatch info is not plain JSON: {err}") from None
    if b.kind != "eof":
        return
    for name in _EOF_COUNTS:
        if name in b.info and not (_is_int(b.info[name]) and 0 <= b.info[name] <= _MAX_COUNT):
            raise WireError(f"end-of-file info.{name} must be a non-negative integer, got {b.info[name]!r}")
    if b.source_kind == "file" and "batches" not in b.info:
        raise WireError("a file's end-of-file marker lacks info.batches")
    for name in ("file", "error"):
        if name in b.info and not isinstance(b.info[name], str):
            raise WireError(f"end-of-file info.{name} must be a string, got {b.info[name]!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _first_bad(values: list, allow_none: bool) -> Any:
    return next((v for v in values if not ((allow_none and v is None) or _is_finite(v))), None)
