"""DFDC-format reader, leakage-free split, crop cache, torch dataset, on generated DFDC-shaped data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from trainer.data import (
    CropCache,
    CropConfig,
    DatasetError,
    evenly_spaced,
    group_key,
    read_dataset,
    split_by_group,
    torch_dataset,
    training_transform,
)
from trainer.synth import generate_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("dfdc")
    generate_dataset(root, 12, seed=3, seconds=1.0, parts=2)
    return root


def test_reader_gets_labels_and_originals_from_metadata(dataset):
    videos = read_dataset([dataset])
    assert len(videos) == 12
    meta = {}
    for part in dataset.iterdir():
        if (part / "metadata.json").exists():
            meta.update({(part.name, k): v for k, v in json.loads((part / "metadata.json").read_text()).items()})
    for v in videos:
        entry = meta[(v.path.parent.name, v.name)]
        assert v.label == (1 if entry["label"] == "FAKE" else 0)
        assert v.original == entry.get("original")
        if v.label == 1:
            assert v.group == group_key(entry["original"])  # groups span part folders (issue 15)


def test_split_never_puts_a_fake_and_its_original_on_both_sides(dataset):
    videos = read_dataset([dataset]) * 1
    for seed in range(5):
        splits = split_by_group(videos, val=0.25, test=0.25, seed=seed)
        assert sum(len(s) for s in splits.values()) == len(videos)
        where = {}
        for name, vs in splits.items():
            for v in vs:
                where.setdefault(v.group, set()).add(name)
        assert all(len(s) == 1 for s in where.values())
        assert len(splits["train"]) >= len(videos) // 3


def test_labels_csv_is_read(tmp_path, dataset):
    part = next(p for p in dataset.iterdir() if p.is_dir())
    names = sorted(p.name for p in part.glob("*.mp4"))[:3]
    d = tmp_path / "test_videos"
    d.mkdir()
    for n in names:
        shutil.copy(part / n, d / n)
    (d / "labels.csv").write_text("filename,label\n" + "".join(f"{n},{i % 2}\n" for i, n in enumerate(names)))
    videos = read_dataset([d])
    assert [(v.name, v.label) for v in videos] == [(n, i % 2) for i, n in enumerate(names)]
    (d / "labels.csv").write_text("filename,label\nx.mp4,FAKE\n")
    with pytest.raises(DatasetError, match="label 0 or 1"):
        read_dataset([d])


def test_bad_metadata_is_a_clear_error(tmp_path):
    (tmp_path / "metadata.json").write_text('{"a.mp4": {"label": "MAYBE"}}')
    with pytest.raises(DatasetError, match="a.mp4 has label MAYBE"):
        read_dataset([tmp_path])
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset([tmp_path / "nope"])


def test_evenly_spaced_frames():
    assert evenly_spaced(100, 5) == {0, 25, 50, 74, 99}
    assert evenly_spaced(3, 10) == {0, 1, 2}


def test_cache_extracts_crops_skips_broken_videos_and_resumes(tmp_path, dataset):
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    videos = read_dataset([data])
    broken = videos[0].path
    broken.write_bytes(broken.read_bytes()[:2000])  # truncated mid-file
    cache = CropCache(tmp_path / "cache", CropConfig(size=32, frames_per_video=6))
    first = cache.build(videos, workers=2, progress=False)
    assert first["failed"] == 1 and first["extracted"] == 11
    assert broken.name in cache.failures(videos)
    crops = cache.load(videos)
    assert crops.images.shape[1:] == (32, 32, 3) and crops.images.dtype == np.uint8
    assert len(crops) >= 0.9 * 11 * 6  # faces found in most sampled frames
    assert set(np.unique(crops.labels)) == {0, 1}
    # Resume: nothing is redone, shards are untouched.
    mtimes = {p: p.stat().st_mtime_ns for p in cache.dir.glob("*.npz")}
    again = cache.build(videos, workers=2, progress=False)
    assert again == {"cached": 12, "extracted": 0, "failed": 0, "crops": 0}
    assert {p: p.stat().st_mtime_ns for p in cache.dir.glob("*.npz")} == mtimes
    # A half-finished run (one shard lost) redoes only that video.
    victim = next(iter(mtimes))
    victim.unlink()
    assert cache.build(videos, workers=1, progress=False)["extracted"] == 1


def test_torch_dataset_gives_augmented_floats_in_unit_range(tmp_path, dataset):
    videos = read_dataset([dataset])[:4]
    cache = CropCache(tmp_path / "cache", CropConfig(size=32, frames_per_video=4))
    cache.build(videos, workers=1, progress=False)
    ds = torch_dataset(cache.load(videos), training_transform(32))
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert y.item() in (0.0, 1.0)
    torch.manual_seed(0)
    a = ds[1][0]
    torch.manual_seed(1)
    b = ds[1][0]
    assert not torch.equal(a, b)  # random flips/rotations/scales differ per draw


def test_flip_augmentation_only_mirrors_and_basic_resamples():
    """``--augment flip``: every draw is the crop or its mirror image, pixel for pixel (to float rounding); ``basic`` rotates
    and scales, so most draws are neither."""
    img = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8))
    exact, mirror = img.float() / 255, img.flip(-1).float() / 255
    flip, basic = training_transform(32, affine=False), training_transform(32)
    torch.manual_seed(0)
    draws = [flip(img) for _ in range(40)]
    assert all(torch.allclose(d, exact) or torch.allclose(d, mirror) for d in draws)
    assert any(torch.allclose(d, exact) for d in draws) and any(torch.allclose(d, mirror) for d in draws)
    resampled = [basic(img) for _ in range(40)]
    assert sum(not (torch.allclose(d, exact) or torch.allclose(d, mirror)) for d in resampled) >= 30


def test_an_unknown_augmentation_is_one_config_error(tmp_path):
    from forensics.errors import ConfigError
    from trainer.train import TrainConfig, Trainer

    with pytest.raises(ConfigError, match="unknown augment 'rotate'"):
        Trainer(TrainConfig(data=[str(tmp_path)], augment="rotate"))
