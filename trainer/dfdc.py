"""DFDC-format labels and the leakage-free split: which videos there are, and which go where.

Layouts read:

- training parts: a folder with ``metadata.json`` mapping file name to
  ``{"label": "REAL"|"FAKE", "split": ..., "original": "<real clip>.mp4"}`` beside the ``*.mp4``;
- test-set style: a folder with ``labels.csv`` (``filename,label``; 0 real, 1 fake).

Splits are made by *group* across all part folders given: a fake's group is its original (which
may sit in another part, or in none), a real clip is its own group, so a fake and its source never
straddle train and validation. :mod:`trainer.data` caches the videos' face crops.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from forensics.errors import ForensicsError
from forensics.logs import get_logger

REAL, FAKE = 0, 1


class DatasetError(ForensicsError):
    """A dataset folder is missing or its labels are malformed."""


@dataclass(frozen=True)
class Video:
    path: Path
    label: int  # 0 REAL, 1 FAKE
    group: str  # split key: the original clip for fakes, the clip itself for reals
    original: str | None = None
    synthetic: bool = False  # written by ``forensics synth`` (metadata entry ``"source": "synthetic"``)

    @property
    def name(self) -> str:
        return self.path.name


def read_dataset(roots: Sequence[str | Path]) -> list[Video]:
    """All labelled videos under the given folders (each a DFDC part, or a parent of parts)."""
    videos: list[Video] = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise DatasetError(f"dataset folder {root} does not exist")
        found = sorted({p.parent for p in root.rglob("metadata.json")} | {p.parent for p in root.rglob("labels.csv")})
        if not found:
            raise DatasetError(f"{root}: no metadata.json or labels.csv found")
        for part in found:
            if (part / "metadata.json").exists():
                videos += _read_metadata(part)
            else:
                videos += _read_labels_csv(part / "labels.csv")
    names = [str(v.path) for v in videos]
    if len(set(names)) != len(names):
        raise DatasetError("the same video is listed twice across the given folders")
    return videos


def _read_metadata(part: Path) -> list[Video]:
    try:
        meta = json.loads((part / "metadata.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"{part / 'metadata.json'}: cannot read ({err})") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{part / 'metadata.json'}: expected an object of file name -> entry")
    out = []
    for name, entry in sorted(meta.items()):
        label = str(entry.get("label", "")).upper() if isinstance(entry, dict) else ""
        if label not in ("REAL", "FAKE"):
            raise DatasetError(f"{part / 'metadata.json'}: {name} has label {label or 'missing'}, not REAL or FAKE")
        original = entry.get("original") if label == "FAKE" else None
        # Groups span parts: a fake's original may sit in another part folder (or in none given).
        group = group_key(original or name)
        synthetic = entry.get("source") == "synthetic"
        out.append(Video(part / name, REAL if label == "REAL" else FAKE, group, original, synthetic))
    return out


def _read_labels_csv(path: Path) -> list[Video]:
    out = []
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err})") from None
    for i, row in enumerate(rows, start=2):
        name, label = (row.get("filename") or "").strip(), (row.get("label") or "").strip()
        if not name or label not in ("0", "1", "0.0", "1.0"):
            raise DatasetError(f"{path}:{i}: expected filename,label with label 0 or 1, got {row}")
        out.append(Video(path.parent / name, int(float(label)), group_key(name)))
    return out


_SEGMENT = re.compile(r"_segment_\d+$")


def group_key(name: str) -> str:
    """The split group of a clip named ``name``: its stem, lower-cased, without a ``_segment_K`` suffix.

    Groups are global across part folders (DFDC fakes name originals that may live in another
    part), and a segment cut from a clip stays with the clip, so the same footage never straddles
    train and test.
    """
    return _SEGMENT.sub("", Path(str(name)).stem.lower())


def split_by_group(
    videos: Sequence[Video], *, val: float = 0.15, test: float = 0.15, seed: int = 0
) -> dict[str, list[Video]]:
    """train/val/test lists; every video of a group lands in the same split.

    Groups are shuffled with ``seed`` and cut by their share of videos, so the splits get
    close to the requested shares even with few groups.
    """
    groups: dict[str, list[Video]] = {}
    for v in videos:
        groups.setdefault(v.group, []).append(v)
    order = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    total = len(videos)
    out: dict[str, list[Video]] = {"test": [], "val": [], "train": []}
    for g in order:
        if len(out["test"]) < test * total:
            out["test"] += groups[g]
        elif len(out["val"]) < val * total:
            out["val"] += groups[g]
        else:
            out["train"] += groups[g]
    return out


def held_out_test(test_roots: Sequence[str | Path], train_videos: Sequence[Video]) -> tuple[list[Video], int]:
    """The test videos of ``test_roots`` (all of them, e.g. another dataset) whose group (original) is not
    among ``train_videos``' groups, so the split by original still holds; and how many were dropped for it."""
    if not test_roots:
        return [], 0
    seen = {v.group for v in train_videos}
    paths = {str(v.path.resolve()) for v in train_videos}
    test = read_dataset(test_roots)
    keep = [v for v in test if v.group not in seen and str(v.path.resolve()) not in paths]
    if len(keep) < len(test):
        get_logger().warning("test videos sharing an original with the training parts left out", count=len(test) - len(keep))
    return keep, len(test) - len(keep)
