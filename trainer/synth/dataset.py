"""DFDC-format datasets and single sample clips from the generator."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from trainer.synth.identity import make_identity
from trainer.synth.scene import _Scene
from trainer.synth.swap import _FaceSwap
from trainer.synth.writer import ClipWriter


def _clip_names(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct random 10-letter lowercase names, DFDC style."""
    letters = np.array(list(string.ascii_lowercase))
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choice(letters, 10))
        if name not in names:
            names.append(name)
    return names


def _split_evenly(total: int, parts: int) -> list[int]:
    return [total // parts + (k < total % parts) for k in range(parts)]


def _render_group(scene: _Scene, swaps: list[_FaceSwap], paths: list[Path], frames: int, fps: int) -> None:
    """Render a REAL scene once and write it (paths[0]) and its FAKEs (paths[1:]) side by side."""
    writers = [ClipWriter(p, scene.width, scene.height, fps) for p in paths]
    try:
        for t in range(frames):
            frame = scene.render(t)
            writers[0].write(frame.to_uint8())
            for swap, writer in zip(swaps, writers[1:]):
                writer.write(swap.apply(frame))
    finally:
        for writer in writers:
            writer.close()


def _checked_frame_count(width: int, height: int, fps: int, seconds: float, difficulty: float) -> int:
    """Frames per clip, after refusing arguments no clip can be made from (ValueError)."""
    if width < 64 or height < 64 or width % 2 or height % 2:
        raise ValueError(f"frame size must be even and at least 64x64, got {width}x{height}")
    if fps < 1 or seconds <= 0:
        raise ValueError(f"need fps >= 1 and seconds > 0, got fps={fps} seconds={seconds}")
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    return max(1, round(fps * seconds))


def generate_dataset(
    out_dir: str | Path,
    videos: int = 8,
    *,
    seed: int = 0,
    width: int = 320,
    height: int = 240,
    fps: int = 15,
    seconds: float = 2.0,
    fake_ratio: float = 0.5,
    difficulty: float = 0.5,
    parts: int = 1,
) -> Path:
    """Write DFDC-layout folders ``out_dir/dfdc_train_part_{k}/`` with metadata.json and H.264 mp4s.

    ``videos`` clips in all (REAL + FAKE), spread evenly over ``parts`` folders. About
    ``fake_ratio`` of them are FAKE, but every part with clips keeps at least one REAL, since
    each FAKE's ``original`` is a REAL clip of the same part (FAKEs are dealt round-robin over
    the part's REALs). Clips are ``seconds * fps`` frames of width x height (both even).
    ``difficulty`` in [0, 1] scales the swap artefacts from obvious (0) to subtle (1).
    Deterministic in ``seed``: same metadata and decoded frames on every run. Returns out_dir.
    """
    frames = _checked_frame_count(width, height, fps, seconds, difficulty)
    if parts < 1 or videos < parts:
        raise ValueError(f"need 1 <= parts <= videos, got parts={parts} videos={videos}")
    if not 0.0 <= fake_ratio <= 1.0:
        raise ValueError(f"fake_ratio must be in [0, 1], got {fake_ratio}")
    out_dir = Path(out_dir)
    per_part = _split_evenly(videos, parts)
    fakes_per_part = [
        min(f, v - 1) for f, v in zip(_split_evenly(round(videos * fake_ratio), parts), per_part)
    ]
    names = iter(_clip_names(np.random.default_rng([seed, 0]), videos))

    for k, (count, n_fake) in enumerate(zip(per_part, fakes_per_part)):
        part_dir = out_dir / f"dfdc_train_part_{k}"
        part_dir.mkdir(parents=True, exist_ok=True)
        n_real = count - n_fake
        real_names = [f"{next(names)}.mp4" for _ in range(n_real)]
        fake_names = [f"{next(names)}.mp4" for _ in range(n_fake)]
        metadata: dict[str, dict[str, str | None]] = {}
        for i, real_name in enumerate(real_names):
            metadata[real_name] = {"label": "REAL", "split": "train", "original": None, "source": "synthetic"}
            identity = make_identity(np.random.default_rng([seed, 1, k, i]))
            scene = _Scene(np.random.default_rng([seed, 2, k, i]), identity, width, height, fps)
            swaps, paths = [], [part_dir / real_name]
            for j in range(i, n_fake, n_real):
                swaps.append(_FaceSwap(scene, difficulty, np.random.default_rng([seed, 3, k, j])))
                paths.append(part_dir / fake_names[j])
                metadata[fake_names[j]] = {"label": "FAKE", "split": "train", "original": real_name, "source": "synthetic"}
            _render_group(scene, swaps, paths, frames, fps)
        (part_dir / "metadata.json").write_text(json.dumps(dict(sorted(metadata.items()))))
    return out_dir


def _sample_scene(seed: int, width: int, height: int, fps: int) -> _Scene:
    return _Scene(np.random.default_rng([seed, 2]), make_identity(np.random.default_rng([seed, 1])), width, height, fps)


def render_real_frames(seed: int, *, width: int = 320, height: int = 240, fps: int = 15, frames: int = 30) -> Iterator[np.ndarray]:
    """The uncompressed frames (uint8 [H, W, 3] RGB) of the REAL clip :func:`render_sample_clip`
    writes for the same arguments, before H.264: for measurements that apply their own degradation."""
    _checked_frame_count(width, height, fps, frames / fps, 0.0)
    scene = _sample_scene(seed, width, height, fps)
    for t in range(frames):
        yield scene.render(t).to_uint8()


def render_sample_clip(
    path: str | Path,
    *,
    fake: bool,
    seed: int,
    width: int = 320,
    height: int = 240,
    fps: int = 15,
    seconds: float = 2.0,
    difficulty: float = 0.5,
) -> None:
    """Write one H.264 clip to ``path``, deterministic in the arguments.

    A REAL clip, or with ``fake=True`` a FAKE made from the REAL clip that the same seed, size,
    fps and seconds give, so the two can be compared frame by frame.
    """
    frames = _checked_frame_count(width, height, fps, seconds, difficulty)
    scene = _sample_scene(seed, width, height, fps)
    with ClipWriter(path, width, height, fps) as writer:
        swap = _FaceSwap(scene, difficulty, np.random.default_rng([seed, 3])) if fake else None
        for t in range(frames):
            frame = scene.render(t)
            writer.write(swap.apply(frame) if swap else frame.to_uint8())
