"""Is a video file's container finished? A cheap structural look, without decoding.

A file being written (or cut short) has a recognisable shape: an MP4 whose last box claims
more bytes than the file holds, or whose index (``moov``) is not written yet (it comes last
unless the writer used faststart); an MPEG-TS whose size is not a whole number of 188-byte
packets, or whose last packet lacks its sync byte. A file that is not recognisably either is
left to the decoder to judge (None: nothing to say).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

MP4_SUFFIXES = (".mp4", ".m4v", ".mov", ".3gp", ".3g2")
TS_SUFFIXES = (".ts", ".mts", ".m2ts")
_TS_SYNC = 0x47
# Top-level ISO-BMFF boxes a writer may put first; anything else is not judged as MP4.
_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp"}


def unfinished(path: Path) -> str | None:
    """Why the container looks unfinished (still being written, or truncated), or None."""
    suffix = path.suffix.lower()
    try:
        if suffix in MP4_SUFFIXES:
            return _mp4(path)
        if suffix in TS_SUFFIXES:
            return _ts(path, 192 if suffix in (".m2ts", ".mts") else 188)
    except OSError:
        return None
    return None


def _mp4(path: Path) -> str | None:
    size = os.path.getsize(path)
    seen: list[bytes] = []
    with open(path, "rb") as f:
        off = 0
        while off < size:
            f.seek(off)
            head = f.read(16)
            if len(head) < 8:
                return f"{size - off} stray bytes after the last box" if seen else None
            box_size, kind = struct.unpack(">I4s", head[:8])
            if not seen and kind not in _FIRST_BOXES:
                return None  # not an MP4 we can judge: the decoder will say what it is
            if box_size == 1:
                if len(head) < 16:
                    return f"the {kind.decode('latin-1')} box header is cut"
                box_size = struct.unpack(">Q", head[8:16])[0]
            elif box_size == 0:
                box_size = size - off  # the box runs to the end of the file
            if box_size < 8:
                return None if not seen else "a box with an impossible size"
            seen.append(kind)
            if off + box_size > size:
                return (f"the {kind.decode('latin-1')} box needs {off + box_size} bytes and the file has "
                        f"{size}")  # fmt: skip
            off += box_size
    if seen and b"moov" not in seen:
        return "no moov box (the index an MP4 writer puts last) yet"
    return None


def _ts(path: Path, packet: int) -> str | None:
    size = os.path.getsize(path)
    if size == 0:
        return None
    if size % packet:
        return f"{size} bytes is not a whole number of {packet}-byte packets"
    with open(path, "rb") as f:
        f.seek(size - packet + (packet - 188))
        if f.read(1) != bytes([_TS_SYNC]):
            return "the last packet lacks its sync byte"
    return None
