"""What a training run learns from: labelled DFDC-format videos, self-blended fakes of real faces,
folders of real footage alone, and the provenance record that says which (kept in the manifest).

Fake sources (``TrainConfig.fakes``):

- ``labelled``: the FAKE videos of the labelled data (the seed's recipe);
- ``self-blended``: no labelled fake is used for training or calibration: train and validation
  fakes are self-blended copies of the REAL crops (``trainer.sbi``); the test split keeps its
  labelled fakes when there are any (so the held-out numbers are on real manipulations), and
  uses self-blended fakes of its REAL crops otherwise;
- ``both``: labelled fakes plus self-blended fakes of the REAL train crops; labelled validation.

``real_only`` folders hold real footage (a user's own cameras): every video in them is REAL (in a
folder with DFDC labels, only its REAL videos are taken). Training from them alone implies
``self-blended``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from forensics.logs import get_logger
from trainer.data import (
    FAKE,
    REAL,
    CropCache,
    CropSet,
    DatasetError,
    Video,
    group_key,
    held_out_test,
    read_dataset,
    split_by_group,
)
from trainer.sbi import BlendStats, self_blended_set

FAKE_SOURCES = ("labelled", "self-blended", "both")
BLEND_SEEDS = {"train": 7, "val": 11, "test": 13}  # offsets from the run seed for fixed self-blended sets
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".ts")


def read_real_folders(roots: Sequence[str | Path]) -> list[Video]:
    """REAL videos of folders of real footage: every video file under them, or the REAL entries where labelled."""
    videos: list[Video] = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise DatasetError(f"real footage folder {root} does not exist")
        if any(root.rglob("metadata.json")) or any(root.rglob("labels.csv")):
            videos += [v for v in read_dataset([root]) if v.label == REAL]
            continue
        found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not found:
            raise DatasetError(f"{root}: no video files ({', '.join(VIDEO_SUFFIXES)}) found")
        videos += [Video(p, REAL, group_key(p.name)) for p in found]
    return videos


def is_synthetic(video: Video) -> bool:
    """True for clips written by ``forensics synth`` (their metadata entry says ``"source": "synthetic"``)."""
    return video.synthetic


@dataclass
class RunData:
    """The crops of one run and where they came from."""

    crops: dict[str, CropSet]  # train / val / test
    failed: dict[str, str]  # video name -> why it gave no crops (decode failure, no face found)
    provenance: dict[str, Any]
    blend: dict[str, BlendStats] = field(default_factory=dict)


def load_run_data(cfg, cache: CropCache, *, build: bool = True, videos_only: bool = False):
    """Read, split (by group across all folders), cache and assemble the crops of a run: a RunData.

    ``cfg`` is a ``TrainConfig``; crops come out at ``cfg.image_size`` whatever size the cache holds.
    ``videos_only``: return the list of videos the run reads, and stop there.
    """
    log = get_logger()
    if cfg.fakes not in FAKE_SOURCES:
        raise DatasetError(f"fakes must be one of {', '.join(FAKE_SOURCES)}, got {cfg.fakes!r}")
    labelled = read_dataset(cfg.data) if cfg.data else []
    extra_real = read_real_folders(cfg.real_only) if cfg.real_only else []
    if not labelled and not extra_real:
        raise DatasetError("no training data: give --data DIR (labelled) or --real-only DIR (real footage)")
    fakes = cfg.fakes if labelled else "self-blended"
    seen = {str(v.path.resolve()) for v in labelled}
    videos = labelled + [v for v in extra_real if str(v.path.resolve()) not in seen]
    held_out, overlap = held_out_test(cfg.test_data, videos)
    if videos_only:
        return videos + held_out
    splits = split_by_group(videos, val=cfg.val_share, test=0 if cfg.test_data else cfg.test_share, seed=cfg.seed)
    if cfg.test_data:
        splits["test"] = held_out
        videos = videos + held_out
    if build:
        counts = cache.build(videos, workers=cfg.workers, progress=cfg.progress)
        log.info("face crops ready", **counts)
    failed = cache.skipped(videos)
    crops = {k: cache.load(v, size=cfg.image_size) for k, v in splits.items()}
    crops["train"] = crops["train"].thin(cfg.train_frames)
    blend: dict[str, BlendStats] = {}
    if fakes == "self-blended":
        for k in ("train", "val") + (("test",) if not (crops["test"].labels == FAKE).any() else ()):
            crops[k], blend[k] = self_blended_set(_reals(crops[k]), seed=cfg.seed + BLEND_SEEDS[k])
    elif fakes == "both":
        # Fixed fakes beside the labelled ones: the scorer and defence fit on them; training makes fresh ones.
        blended, blend["train"] = self_blended_set(crops["train"], seed=cfg.seed + BLEND_SEEDS["train"])
        crops["train"] = _concat(crops["train"], blended.subset(blended.is_blended()))
    for name in ("val", "test"):
        cs = crops[name]
        if len(cs) == 0 or len(np.unique(cs.labels)) < 2:
            hint = " (self-blended fakes need landmarks: see README, 'Training for real video')" if fakes != "labelled" else ""
            raise DatasetError(f"the {name} split has {len(cs)} face crops and needs both REAL and FAKE{hint}: add videos")
    train = crops["train"]
    if fakes == "labelled" and len(np.unique(train.labels)) < 2:
        raise DatasetError(f"the train split has {len(train)} face crops and needs both REAL and FAKE: add videos")
    provenance = describe(videos, splits, crops, fakes, cfg, failed, blend)
    if cfg.test_data:
        provenance["test_roots"] = [str(p) for p in cfg.test_data]
        provenance["test_overlap_dropped"] = overlap
    return RunData(crops, failed, provenance, blend)


def skip_reasons(failed: dict[str, str]) -> dict[str, int]:
    """How many videos were skipped for each kind of reason (``x.mp4: truncated: ...`` counts as ``truncated``)."""
    kinds: dict[str, int] = {}
    for reason in failed.values():
        text = reason.split(": ", 1)[1] if reason.split(": ", 1)[0].endswith(VIDEO_SUFFIXES) else reason
        kind = text.split(":")[0].split(" (")[0].strip()
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def _reals(cs: CropSet) -> CropSet:
    return cs.subset(cs.labels == REAL)


def _concat(a: CropSet, b: CropSet) -> CropSet:
    """Crops of ``a`` then of ``b``, where ``b`` indexes the same (or a longer) ``videos`` list."""
    cat = lambda x, y: None if x is None or y is None else np.concatenate([x, y])
    return CropSet(np.concatenate([a.images, b.images]), np.concatenate([a.labels, b.labels]),
                   np.concatenate([a.video, b.video]), np.concatenate([a.frame_index, b.frame_index]),
                   b.videos if len(b.videos) >= len(a.videos) else a.videos, cat(a.boxes, b.boxes),
                   cat(a.landmarks, b.landmarks), cat(a.outline, b.outline),
                   np.concatenate([a.is_blended(), b.is_blended()]))  # fmt: skip


def describe(videos, splits, crops, fakes: str, cfg, failed, blend) -> dict[str, Any]:
    """The provenance record kept in the manifest: what the version was trained on."""
    train_videos = [v for v in splits["train"] if v.name not in failed]
    synthetic = bool(train_videos) and all(is_synthetic(v) for v in train_videos)
    train = crops["train"]
    sources = []
    if fakes in ("labelled", "both") and ((train.labels == FAKE) & ~train.is_blended()).any():
        sources.append("synthetic" if synthetic else "real labelled")
    if fakes in ("self-blended", "both"):
        sources.append("self-blended")
    if cfg.gen_weight > 0 and cfg.gan_epochs > 0:
        sources.append("generator samples")
    from trainer.sbi import blendable

    size = int(train.images.shape[1]) if len(train) else cfg.image_size
    real_idx = np.where(train.labels == REAL)[0]
    points = train.blend_points()
    n_blendable = int(blendable(None if points is None else points[real_idx], len(real_idx), size).sum())
    return {
        "data": "synthetic" if synthetic else "real",
        "fakes": fakes,
        "sources": sources,
        "input_size": int(cfg.image_size),
        "architecture": cfg.arch,
        "videos": {k: {"real": int(sum(v.label == REAL for v in cs.videos if "#sbi" not in v.name)),
                       "fake": int(sum(v.label == FAKE for v in cs.videos if "#sbi" not in v.name))}
                   for k, cs in crops.items()},
        "crops": {k: {"real": int((cs.labels == REAL).sum()), "fake": int(((cs.labels == FAKE) & ~cs.is_blended()).sum()),
                      "self_blended": int(cs.is_blended().sum())}
                  for k, cs in crops.items()},
        "self_blended": {"train_sources": n_blendable if "self-blended" in sources else 0,
                         "no_landmarks": int(len(real_idx) - n_blendable) if "self-blended" in sources else 0,
                         **{k: {"blended": b.blended, "no_landmarks": b.no_landmarks} for k, b in blend.items()}},
        "skipped_videos": {"count": len(failed), "reasons": skip_reasons(failed)},
        "roots": [str(p) for p in cfg.data],
        "real_only_roots": [str(p) for p in cfg.real_only],
    }
