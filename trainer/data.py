"""DFDC-format data: cache face crops and serve them to torch; recipes' splits and caches.

Reading the parts' labels and the leakage-free split are in :mod:`trainer.dfdc` (re-exported here,
where most callers import them from).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from forensics.config import FaceSettings, LimitSettings
from forensics.errors import BadVideo
from forensics.faces import build_cropper
from forensics.logs import get_logger
from forensics.video import FrameSampler, decode_file
from trainer.dfdc import (  # noqa: F401  (re-exported)
    FAKE,
    REAL,
    DatasetError,
    Video,
    group_key,
    held_out_test,
    read_dataset,
    split_by_group,
)

# ---- face crop cache -------------------------------------------------------------------------


@dataclass(frozen=True)
class CropConfig:
    size: int = 64
    frames_per_video: int = 32
    margin: float = 1 / 3
    detector: str = "blazeface"  # as served (FaceSettings' default): crops framed as the detect worker frames them
    detect_width: int = 640
    max_faces: int = 1

    def key(self) -> str:
        raw = json.dumps(asdict(self), sort_keys=True)
        return f"s{self.size}_n{self.frames_per_video}_" + hashlib.sha1(raw.encode()).hexdigest()[:8]


def _shard_name(video: Video) -> str:
    return hashlib.sha1(str(video.path.resolve()).encode()).hexdigest()[:16]


def evenly_spaced(n_frames: int, k: int) -> set[int]:
    """k frame indices spread evenly over [0, n_frames)."""
    if n_frames <= 0:
        return set()
    if k >= n_frames:
        return set(range(n_frames))
    return {int(i) for i in np.linspace(0, n_frames - 1, k).round()}


def extract_crops(video: Video, cfg: CropConfig) -> dict[str, np.ndarray]:
    """Face crops of ``cfg.frames_per_video`` evenly spaced frames.

    Returns images uint8 [K, S, S, 3], frame_index int32 [K], track int32 [K]. Raises BadVideo.
    """
    from forensics.video import probe

    limits = LimitSettings()
    info = probe(video.path, limits)
    n = info.frames or int(round((info.duration or 0) * (info.fps or 0)))
    wanted = evenly_spaced(n, cfg.frames_per_video) if n else None
    faces = FaceSettings(
        detector=cfg.detector, margin=cfg.margin, detect_width=cfg.detect_width, max_faces=cfg.max_faces
    )
    cropper = build_cropper(faces, cfg.size)
    images, frames, tracks, boxes, marks, outline = [], [], [], [], [], []
    last = max(wanted) if wanted else None
    for df in decode_file(video.path, limits, FrameSampler("every_nth", every_nth=1)):
        if wanted is not None and df.index not in wanted:
            if last is not None and df.index > last:
                break
            continue
        for crop in cropper.crops(df):
            images.append(crop.image)
            frames.append(df.index)
            tracks.append(-1 if crop.track is None else crop.track)
            boxes.append(to_crop_coords(np.asarray(crop.box, np.float32).reshape(2, 2), crop.region, cfg.size).ravel())
            lm = crop.landmarks
            marks.append(None if lm is None else to_crop_coords(np.asarray(lm, np.float32).reshape(-1, 2), crop.region, cfg.size))
            mesh = crop.face.mesh if crop.face is not None else None
            outline.append(np.full((len(FACE_OVAL), 2), np.nan, np.float32) if mesh is None
                           else to_crop_coords(np.asarray(mesh, np.float32)[list(FACE_OVAL)], crop.region, cfg.size))  # fmt: skip
    out = {
        "images": np.stack(images) if images else np.zeros((0, cfg.size, cfg.size, 3), np.uint8),
        "frame_index": np.asarray(frames, np.int32),
        "track": np.asarray(tracks, np.int32),
        "box": np.asarray(boxes, np.float32).reshape(-1, 4),
    }
    if marks and all(m is not None for m in marks) and len({m.shape for m in marks}) == 1:
        out["landmarks"] = np.stack(marks).astype(np.float32)
    if outline and any(np.isfinite(o).all() for o in outline):
        out["outline"] = np.stack(outline).astype(np.float32)
    return out


# MediaPipe face-mesh indices of the face oval (forehead, temples, jaw, chin), clockwise: the
# outline self-blended fakes take their mask from, like SBI's 81-landmark hull.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)  # fmt: skip


def to_crop_coords(points: np.ndarray, region, size: int) -> np.ndarray:
    """Frame-pixel points float32 [P, 2] (x, y) -> pixel coordinates in the ``size`` x ``size`` crop of ``region``."""
    x0, y0, x1, y1 = region
    scale = size / max(1, x1 - x0)
    return ((points - np.array([x0, y0], np.float32)) * scale).astype(np.float32)


def _extract_to_shard(video: Video, cfg: CropConfig, shard: Path) -> tuple[str, int, str]:
    try:
        arrays = extract_crops(video, cfg)
    except BadVideo as err:
        shard.with_suffix(".failed").write_text(str(err) + "\n")
        return video.name, -1, str(err)
    tmp = shard.with_name(shard.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, shard)  # atomic: a shard either exists whole or not at all
    return video.name, int(arrays["images"].shape[0]), ""


class CropCache:
    """Face crops per video on disk (one ``.npz`` shard each), resumable and shared between runs."""

    def __init__(self, root: str | Path, cfg: CropConfig, *, out_size: int | None = None):
        self.cfg = cfg
        self.out_size = out_size  # default size of loaded crops (None: as cached)
        self.dir = Path(root) / cfg.key()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
        self.log = get_logger()

    def shard(self, video: Video) -> Path:
        return self.dir / f"{_shard_name(video)}.npz"

    def missing(self, videos: Iterable[Video]) -> list[Video]:
        return [
            v for v in videos if not self.shard(v).exists() and not self.shard(v).with_suffix(".failed").exists()
        ]

    def build(self, videos: Sequence[Video], *, workers: int = 2, progress: bool = True) -> dict[str, int]:
        """Extract crops of every video not cached yet, in parallel; returns counts."""
        todo = self.missing(videos)
        counts = {"cached": len(videos) - len(todo), "extracted": 0, "failed": 0, "crops": 0}
        if not todo:
            return counts
        bar = _progress(len(todo), "face crops", progress)
        with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(_extract_to_shard, v, self.cfg, self.shard(v)) for v in todo]
            for fut in as_completed(futures):
                name, n, err = fut.result()
                if err:
                    counts["failed"] += 1
                    self.log.warning("video skipped", video=name, reason=err)
                else:
                    counts["extracted"] += 1
                    counts["crops"] += n
                bar.update(1)
        bar.close()
        return counts

    def failures(self, videos: Iterable[Video]) -> dict[str, str]:
        out = {}
        for v in videos:
            f = self.shard(v).with_suffix(".failed")
            if f.exists():
                out[v.name] = f.read_text().strip()
        return out

    def load(self, videos: Sequence[Video], *, size: int | None = None) -> CropSet:
        """All cached crops of these videos as one in-memory set (skipping failed videos and videos without faces).

        ``size``: resize the crops (and their boxes and landmarks) to ``size`` x ``size`` (default: as cached),
        so one cache at the largest size serves smaller models.
        """
        s = size or self.out_size or self.cfg.size
        images, labels, vid, frames, boxes, marks, outlines = [], [], [], [], [], [], []
        kept: list[Video] = []
        for v in videos:
            path = self.shard(v)
            if not path.exists():
                continue
            with np.load(path, allow_pickle=False) as z:
                imgs = z["images"]
                fi = z["frame_index"]
                box = z["box"] if "box" in z.files else np.full((len(imgs), 4), np.nan, np.float32)
                lm = z["landmarks"] if "landmarks" in z.files else None
                ol = z["outline"] if "outline" in z.files else np.full((len(imgs), len(FACE_OVAL), 2), np.nan, np.float32)
            if not len(imgs):
                continue
            if s != self.cfg.size:
                imgs = resize_crops(imgs, s)
                box = box * (s / self.cfg.size)
                lm = None if lm is None else lm * (s / self.cfg.size)
                ol = ol * (s / self.cfg.size)
            vi = len(kept)
            kept.append(v)
            images.append(imgs)
            labels.append(np.full(len(imgs), v.label, np.int64))
            vid.append(np.full(len(imgs), vi, np.int64))
            frames.append(fi.astype(np.int64))
            boxes.append(box.astype(np.float32))
            marks.append(lm)
            outlines.append(ol.astype(np.float32))
        n_points = {m.shape[1] for m in marks if m is not None}
        landmarks = None
        if len(n_points) == 1:  # NaN rows for crops whose video was cached without landmarks
            p = n_points.pop()
            landmarks = np.concatenate([m if m is not None else np.full((len(b), p, 2), np.nan, np.float32)
                                        for m, b in zip(marks, boxes)]).astype(np.float32)  # fmt: skip
        return CropSet(
            images=np.concatenate(images) if images else np.zeros((0, s, s, 3), np.uint8),
            labels=np.concatenate(labels) if labels else np.zeros(0, np.int64),
            video=np.concatenate(vid) if vid else np.zeros(0, np.int64),
            frame_index=np.concatenate(frames) if frames else np.zeros(0, np.int64),
            videos=kept,
            boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
            landmarks=landmarks,
            outline=np.concatenate(outlines) if outlines else None,
        )

    def skipped(self, videos: Iterable[Video]) -> dict[str, str]:
        """Every cached video that gives no crops, with why: its decode failure, or ``no face found``."""
        videos = list(videos)
        return {**self.failures(videos), **{name: "no face found" for name in self.faceless(videos)}}

    def faceless(self, videos: Iterable[Video]) -> list[str]:
        """Names of cached videos in which no face was found (they contribute no crops)."""
        out = []
        for v in videos:
            path = self.shard(v)
            if path.exists():
                with np.load(path, allow_pickle=False) as z:
                    if z["frame_index"].shape[0] == 0:
                        out.append(v.name)
        return out


def resize_crops(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, s, s, 3] -> uint8 [N, size, size, 3] (area interpolation down, bilinear up)."""
    import cv2

    interp = cv2.INTER_AREA if size < images.shape[1] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(im, (size, size), interpolation=interp) for im in images]) if len(images) else (
        np.zeros((0, size, size, 3), np.uint8))  # fmt: skip


@dataclass
class CropSet:
    images: np.ndarray  # uint8 [N, S, S, 3]
    labels: np.ndarray  # int64 [N], 0 REAL 1 FAKE
    video: np.ndarray  # int64 [N], index into ``videos``
    frame_index: np.ndarray  # int64 [N]
    videos: list[Video]
    boxes: np.ndarray | None = None  # float32 [N, 4], the detected face box in crop pixels (x0, y0, x1, y1); NaN if unknown
    landmarks: np.ndarray | None = None  # float32 [N, P, 2], face landmarks in crop pixels (x, y); NaN rows if unknown
    outline: np.ndarray | None = None  # float32 [N, 36, 2], face-mesh oval (FACE_OVAL) in crop pixels; NaN rows if unknown
    blended: np.ndarray | None = None  # bool [N], True for self-blended fakes made from the set's reals (None: none)

    def is_blended(self) -> np.ndarray:
        """bool [N]: which crops are self-blended fakes (trainer/sbi.py), not crops of a video."""
        return np.zeros(len(self), bool) if self.blended is None else self.blended

    def blend_points(self) -> np.ndarray | None:
        """float32 [N, P, 2]: per crop, the points a self-blend mask is built from (outline, else landmarks; NaN: none)."""
        if self.outline is None and self.landmarks is None:
            return None
        n = len(self)
        out = np.full((n, len(FACE_OVAL), 2), np.nan, np.float32)
        if self.landmarks is not None:
            out[:, : self.landmarks.shape[1]] = self.landmarks
        if self.outline is not None:
            has = np.isfinite(self.outline).all(axis=(1, 2))
            out[has] = self.outline[has]
        return out

    def thin(self, per_video: int) -> CropSet:
        """At most ``per_video`` crops of each video, evenly spread over its crops (all when 0)."""
        if per_video <= 0:
            return self
        keep = np.zeros(len(self), bool)
        for v in np.unique(self.video):
            idx = np.where(self.video == v)[0]
            keep[idx[sorted(evenly_spaced(len(idx), per_video))]] = True
        return self.subset(keep)

    def subset(self, keep: np.ndarray) -> CropSet:
        """The crops where ``keep`` (bool [N]) is True; ``videos`` unchanged."""
        pick = lambda a: None if a is None else a[keep]
        return CropSet(self.images[keep], self.labels[keep], self.video[keep], self.frame_index[keep], self.videos,
                       pick(self.boxes), pick(self.landmarks), pick(self.outline), pick(self.blended))  # fmt: skip

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def fingerprint(self) -> str:
        """sha256 over the crops and labels: identifies the exact training data."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update(self.labels.tobytes())
        return h.hexdigest()


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="video", disable=not enabled, dynamic_ncols=True)


# ---- torch side -----------------------------------------------------------------------------


def training_transform(size: int, *, strong: bool = False, affine: bool = True):
    """torchvision v2 pipeline on uint8 CHW tensors -> float32 [3, size, size] in [0, 1].

    Always a random horizontal flip; ``affine`` adds a random rotation and scale (bilinear: it
    resamples, and so softens, every crop it moves).
    ``strong`` adds what the DFDC winners trained with, each applied at random: JPEG
    compression (quality 30..95), down-and-up resizing (to 35..80 % of the side), blur, colour
    jitter, greyscale, and cut-out (an erased rectangle of 2..15 % of the image).
    """
    import torch
    from torchvision.transforms import v2

    steps = [v2.RandomHorizontalFlip()]
    if affine or strong:
        steps.append(v2.RandomAffine(degrees=20 if not strong else 10, scale=(0.9, 1.1), interpolation=v2.InterpolationMode.BILINEAR))
    if strong:
        steps += [
            v2.RandomApply([v2.JPEG(quality=(30, 95))], p=0.5),
            v2.RandomApply([v2.RandomChoice([v2.Compose([v2.Resize(int(size * f), antialias=True), v2.Resize(size, antialias=True)])
                                             for f in (0.35, 0.5, 0.65, 0.8)])], p=0.3),  # fmt: skip
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.3, 1.5))], p=0.15),
            v2.RandomApply([v2.ColorJitter(0.2, 0.2, 0.2, 0.02)], p=0.5),
            v2.RandomGrayscale(p=0.05),
        ]
    steps += [
        v2.Resize((size, size), interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
        v2.ToDtype(torch.float32, scale=True),
    ]
    if strong:
        steps.append(v2.RandomErasing(p=0.3, scale=(0.02, 0.15), value=0))
    return v2.Compose(steps)


def eval_transform(size: int):
    import torch
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.Resize((size, size), interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


def torch_dataset(crops: CropSet, transform):
    """A torch Dataset of (image float32 [3,S,S] in [0,1], label float32) over a CropSet."""
    import torch
    from torch.utils.data import Dataset

    class _Crops(Dataset):
        def __init__(self):
            self.images = torch.from_numpy(crops.images).permute(0, 3, 1, 2)  # uint8 NCHW view
            self.labels = torch.from_numpy(crops.labels.astype(np.float32))

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return transform(self.images[i]), self.labels[i]

    return _Crops()


def as_float_tensor(images: np.ndarray):
    """uint8 [N, S, S, 3] -> torch float32 [N, 3, S, S] in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


# ---- a training recipe's splits (TrainConfig as recorded in a version's report/metrics.json) ----


def version_recipe(artifact) -> tuple[dict, dict]:
    """(``report/metrics.json``, its training config with ``image_size`` filled in) of a registered version."""
    import json

    path = artifact.path / "report" / "metrics.json"
    meta = json.loads(path.read_text()) if path.exists() else {}
    config = meta.get("config", {})
    config.setdefault("image_size", artifact.input_size)
    return meta, config


def recipe_cache(cache_dir: str | Path, config: dict) -> CropCache:
    """The crop cache a recipe trained from (same cached size and frames per video), loading at its input size."""
    size = int(config.get("image_size", 64))
    return CropCache(cache_dir, CropConfig(size=int(config.get("crop_size") or size),
                                           frames_per_video=int(config.get("frames_per_video", 16)),
                                           detector=str(config.get("crop_detector") or "blazeface")),
                     out_size=size)  # fmt: skip


def recipe_splits(videos: Sequence[Video], config: dict) -> dict[str, list[Video]]:
    """train/val/test as the recipe split them: same shares and seed, so held-out clips stay held out
    (with ``test_data``, the recipe's held-out test parts are the test split)."""
    test_roots = config.get("test_data") or []
    out = split_by_group(videos, val=float(config.get("val_share", 0.15)), seed=int(config.get("seed", 0)),
                         test=0.0 if test_roots else float(config.get("test_share", 0.2)))  # fmt: skip
    if test_roots:
        out["test"] = held_out_test(test_roots, videos)[0]
    return out


def load_recipe_splits(data_dirs, config: dict, cache_dir: str | Path, *,
                       which: Sequence[str] = ("train", "val", "test"), workers: int = 2) -> dict[str, CropSet]:  # fmt: skip
    """The crops of the recipe's ``which`` splits of ``data_dirs`` (extracting any not cached yet)."""
    splits = recipe_splits(read_dataset(data_dirs), config)
    cache = recipe_cache(cache_dir, config)
    cache.build([v for k in which for v in splits[k]], workers=workers, progress=False)
    return {k: cache.load(splits[k]) for k in which}
