"""The synthetic DFDC-shaped generator: layout, real H.264 output, determinism, faces Haar finds,
and swaps whose artefacts sit in the face and scale with difficulty."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from trainer.synth import generate_dataset, render_sample_clip, write_clip

ROOT = Path(__file__).resolve().parents[1]
HAAR = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


def decode(path: Path) -> list[np.ndarray]:
    """All frames of a clip, uint8 [H, W, 3] RGB."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def face_box(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """The largest Haar frontal face (x, y, w, h): scaleFactor 1.1, minNeighbors 5, on grey; or None.

    minSize (a fifth of the frame height) only skips scales far below the generator's faces
    (30-50% of the height): it keeps the test fast and ignores tiny hits on textured shirts.
    """
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    side = gray.shape[0] // 5
    boxes = HAAR.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
    return tuple(max(boxes, key=lambda b: b[2] * b[3])) if len(boxes) else None


def metadata(part: Path) -> dict[str, dict]:
    return json.loads((part / "metadata.json").read_text())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The default dataset: 8 clips, 320x240, 2 s at 15 fps, one part."""
    return generate_dataset(tmp_path_factory.mktemp("synth"), seed=0)


@pytest.fixture(scope="module")
def clips(dataset) -> dict[str, tuple[dict, list[np.ndarray]]]:
    """name -> (metadata entry, decoded frames) for every clip of the default dataset."""
    part = dataset / "dfdc_train_part_0"
    return {name: (entry, decode(part / name)) for name, entry in metadata(part).items()}


def test_default_dataset_has_dfdc_layout_and_metadata(dataset):
    parts = sorted(p.name for p in dataset.iterdir())
    assert parts == ["dfdc_train_part_0"]
    part = dataset / "dfdc_train_part_0"
    meta = metadata(part)
    assert sorted(meta) == sorted(p.name for p in part.glob("*.mp4"))
    assert all(re.fullmatch(r"[a-z]{10}\.mp4", name) for name in meta)
    labels = [entry["label"] for entry in meta.values()]
    assert labels.count("REAL") == 4 and labels.count("FAKE") == 4
    assert all(entry["split"] == "train" for entry in meta.values())
    for entry in meta.values():
        if entry["label"] == "REAL":
            assert entry["original"] is None
        else:
            assert meta[entry["original"]]["label"] == "REAL"


def test_clips_are_h264_yuv420p_with_the_requested_size_rate_and_length(dataset):
    part = dataset / "dfdc_train_part_0"
    total_bytes = 0
    for name in metadata(part):
        with av.open(str(part / name)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert stream.codec_context.pix_fmt == "yuv420p"
            assert (stream.codec_context.width, stream.codec_context.height) == (320, 240)
            assert stream.average_rate == 15
            frames = list(container.decode(video=0))
        assert len(frames) == 30
        assert frames[0].key_frame and frames[15].key_frame  # a keyframe every second
        total_bytes += (part / name).stat().st_size
    assert 100_000 < total_bytes < 8_000_000  # small, but not empty or uncompressed


def test_parts_each_hold_their_fakes_originals(tmp_path):
    root = generate_dataset(tmp_path, 7, seed=1, parts=3, seconds=0.2, fake_ratio=0.6)
    parts = sorted(root.iterdir())
    assert [p.name for p in parts] == [f"dfdc_train_part_{k}" for k in range(3)]
    metas = [metadata(p) for p in parts]
    assert [len(m) for m in metas] == [3, 2, 2]
    names = [name for m in metas for name in m]
    assert len(set(names)) == 7
    for meta in metas:
        reals = {n for n, e in meta.items() if e["label"] == "REAL"}
        fakes = [e for e in meta.values() if e["label"] == "FAKE"]
        assert reals  # every part keeps at least one REAL for its fakes to come from
        assert all(e["original"] in reals for e in fakes)
    assert sum(e["label"] == "FAKE" for m in metas for e in m.values()) == 4  # round(7 * 0.6)


def test_same_seed_gives_identical_metadata_and_frames_and_another_seed_differs(tmp_path):
    def run(seed: int, name: str) -> tuple[str, list[np.ndarray]]:
        part = generate_dataset(tmp_path / name, 2, seed=seed, seconds=0.6) / "dfdc_train_part_0"
        text = (part / "metadata.json").read_text()
        fake = next(n for n, e in json.loads(text).items() if e["label"] == "FAKE")
        return text, decode(part / fake)

    meta_a, frames_a = run(5, "a")
    meta_b, frames_b = run(5, "b")
    meta_c, frames_c = run(6, "c")
    assert meta_a == meta_b
    assert len(frames_a) == len(frames_b) == 9
    assert all(np.array_equal(a, b) for a, b in zip(frames_a, frames_b))
    assert meta_c != meta_a
    assert np.abs(frames_c[0].astype(int) - frames_a[0].astype(int)).mean() > 10


def test_haar_finds_a_face_in_nearly_every_real_frame_and_most_fake_frames(clips):
    found = {"REAL": [], "FAKE": []}
    for entry, frames in clips.values():
        for frame in frames[::2]:
            box = face_box(frame)
            found[entry["label"]].append(box is not None)
            if box is not None:
                assert 0.25 <= box[3] / frame.shape[0] <= 0.65  # faces are 30-50% of the frame height
    real_rate, fake_rate = np.mean(found["REAL"]), np.mean(found["FAKE"])
    print(f"Haar face found in {real_rate:.1%} of REAL and {fake_rate:.1%} of FAKE frames")
    assert len(found["REAL"]) == len(found["FAKE"]) == 60
    assert real_rate >= 0.9
    assert fake_rate >= 0.75


def test_fakes_differ_from_their_originals_inside_the_face_not_around_it(clips):
    for entry, fake_frames in clips.values():
        if entry["label"] != "FAKE":
            continue
        real_frames = clips[entry["original"]][1]
        inside, outside = [], []
        for real, fake in zip(real_frames[::5], fake_frames[::5]):
            box = face_box(real)
            if box is None:
                continue
            x, y, w, h = box
            diff = np.abs(real.astype(np.float32) - fake.astype(np.float32)).mean(-1)
            in_face = np.zeros(diff.shape, bool)
            in_face[y : y + h, x : x + w] = True
            # Leave a margin around the face: the mask's soft edge and jitter may reach past the box.
            around = ~cv2.dilate(in_face.astype(np.uint8), np.ones((h // 3, h // 3), np.uint8)).astype(bool)
            inside.append(diff[in_face].mean())
            outside.append(diff[around].mean())
        assert len(inside) >= 4
        assert np.mean(inside) > 4.0  # grey levels: a different face
        assert np.mean(inside) > 4 * np.mean(outside)


def _artefacts(tmp_path: Path, seed: int, difficulty: float) -> tuple[float, float]:
    """(mean abs difference inside the face box, fake/real Laplacian variance there) for one fake."""
    render_sample_clip(tmp_path / "real.mp4", fake=False, seed=seed, seconds=1.0)
    render_sample_clip(tmp_path / "fake.mp4", fake=True, seed=seed, seconds=1.0, difficulty=difficulty)
    diffs, sharpness = [], []
    for real, fake in list(zip(decode(tmp_path / "real.mp4"), decode(tmp_path / "fake.mp4")))[::3]:
        box = face_box(real)
        if box is None:
            continue
        x, y, w, h = box
        real_face = real[y : y + h, x : x + w].astype(np.float32)
        fake_face = fake[y : y + h, x : x + w].astype(np.float32)
        diffs.append(np.abs(real_face - fake_face).mean())
        lap_real = cv2.Laplacian(cv2.cvtColor(real_face, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()
        lap_fake = cv2.Laplacian(cv2.cvtColor(fake_face, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()
        sharpness.append(lap_fake / lap_real)
    assert len(diffs) >= 3
    return float(np.mean(diffs)), float(np.mean(sharpness))


@pytest.mark.parametrize("seed", [0, 1])
def test_lower_difficulty_leaves_stronger_swap_artefacts(tmp_path, seed):
    obvious_diff, obvious_sharpness = _artefacts(tmp_path, seed, difficulty=0.0)
    subtle_diff, subtle_sharpness = _artefacts(tmp_path, seed, difficulty=1.0)
    print(f"seed {seed}: face diff {obvious_diff:.1f} vs {subtle_diff:.1f}, "
          f"sharpness ratio {obvious_sharpness:.2f} vs {subtle_sharpness:.2f}")  # fmt: skip
    assert obvious_diff > 1.5 * subtle_diff
    assert subtle_diff > 3.0  # even a subtle fake is another face
    assert obvious_sharpness < 0.85 * subtle_sharpness  # low-resolution swap: blurrier face


def test_face_size_follows_frame_size(tmp_path):
    render_sample_clip(tmp_path / "hd.mp4", fake=False, seed=2, width=640, height=360, seconds=0.2)
    frames = decode(tmp_path / "hd.mp4")
    assert len(frames) == 3 and frames[0].shape == (360, 640, 3)
    heights = [box[3] / 360 for box in map(face_box, frames) if box is not None]
    assert len(heights) >= 2
    assert all(0.25 <= h <= 0.65 for h in heights)


def test_write_clip_encodes_frames_that_decode_close_to_the_input(tmp_path):
    y, x = np.mgrid[0:64, 0:96]
    frames = [np.dstack([x * 2 + t, y * 3, np.full_like(x, 128)]).astype(np.uint8) for t in range(5)]
    write_clip(tmp_path / "ramp.mp4", frames, fps=10)
    decoded = decode(tmp_path / "ramp.mp4")
    assert len(decoded) == 5
    for original, back in zip(frames, decoded):
        assert np.abs(original.astype(int) - back.astype(int)).mean() < 3.0


def test_bad_arguments_are_refused_with_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="even"):
        generate_dataset(tmp_path, 2, width=321)
    with pytest.raises(ValueError, match="parts"):
        generate_dataset(tmp_path, 2, parts=3)
    with pytest.raises(ValueError, match="difficulty"):
        generate_dataset(tmp_path, 2, difficulty=1.5)
    with pytest.raises(ValueError, match="at least one frame"):
        write_clip(tmp_path / "empty.mp4", [], fps=10)
    with pytest.raises(ValueError, match="even"):
        write_clip(tmp_path / "odd.mp4", [np.zeros((63, 64, 3), np.uint8)], fps=10)


def test_importing_the_generator_does_not_import_torch():
    code = "import sys, trainer.synth; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0
