"""File-drop ingest against a real Redis and real H.264 files."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from forensics.streams import Keys, ack, backlog, ensure_group, read_group
from forensics.wire import decode
from tests.media import write_test_video
from workers.ingest import FileIngest


def _entries(r, settings):
    return [decode(f) for _id, f in r.xrange(Keys(settings.redis.prefix).frames)]


def _drop(src: Path, settings, name: str | None = None) -> Path:
    dst = Path(settings.ingest.watch_dir) / (name or src.name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return dst


@pytest.mark.parametrize(
    "sample, kwargs, expected_frames",
    [
        ("every_nth", {"every_nth": 1}, list(range(90))),
        ("every_nth", {"every_nth": 4}, list(range(0, 90, 4))),
        ("fps", {"fps": 2.0}, [0, 15, 30, 45, 60, 75]),
        ("fps", {"fps": 7.5}, [i * 4 for i in range(23)]),
        ("keyframes", {}, [0, 30, 60]),
    ],
)
def test_frames_on_the_stream_match_the_sampling(r, settings, clip_30fps, sample, kwargs, expected_frames):
    settings.ingest.sample = sample
    for k, v in kwargs.items():
        setattr(settings.ingest, k, v)
    settings.ingest.batch_size = 5
    ing = FileIngest(settings, r)
    out = ing.process(_drop(clip_30fps, settings))
    assert out.status == "done", out.reason
    batches = _entries(r, settings)
    frames = [b for b in batches if b.kind == "frames"]
    assert [i for b in frames for i in b.frame_index] == expected_frames
    assert len(frames) == math.ceil(len(expected_frames) / 5)
    assert [b.seq for b in batches] == list(range(len(frames) + 1))
    assert batches[-1].kind == "eof" and batches[-1].info["batches"] == len(frames)
    assert batches[-1].info["frames_decoded"] == (3 if sample == "keyframes" else 90)
    assert all(b.images.shape[1:] == (64, 64, 3) for b in frames)
    # pts in seconds, increasing, consistent with 30 fps
    pts = [p for b in frames for p in b.pts]
    assert pts == pytest.approx([i / 30 for i in expected_frames], abs=1e-6)
    assert (Path(settings.ingest.watch_dir) / "done" / clip_30fps.name).exists()
    assert not (Path(settings.ingest.watch_dir) / clip_30fps.name).exists()


def test_whole_frames_are_resized_images_of_the_source(r, settings, clip_30fps):
    import av

    settings.ingest.sample, settings.ingest.every_nth = "every_nth", 45
    FileIngest(settings, r).process(_drop(clip_30fps, settings))
    b = _entries(r, settings)[0]
    import cv2

    with av.open(str(clip_30fps)) as c:
        full = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    ref = cv2.resize(full, (64, 64), interpolation=cv2.INTER_AREA).astype(int)
    diff = abs(b.images[0].astype(int) - ref)
    assert diff.mean() < 4 and np.percentile(diff, 99) < 40, (diff.mean(), diff.max())
    assert b.box[0] == [0, 0, 320, 240] and b.frame_size == (320, 240) and b.track[0] is None


def test_720p_file_yields_the_right_number_of_batches(r, settings, tmp_path):
    src = write_test_video(tmp_path / "hd.mp4", frames=50, fps=25, width=1280, height=720, gop=25)
    settings.ingest.sample, settings.ingest.fps, settings.ingest.batch_size = "fps", 5.0, 4
    out = FileIngest(settings, r).process(_drop(src, settings))
    assert out.status == "done"
    frames = [b for b in _entries(r, settings) if b.kind == "frames"]
    assert sum(len(b) for b in frames) == 10  # 2 s at 5 fps
    assert len(frames) == 3 and frames[0].frame_size == (1280, 720)


def _bad_files(tmp: Path, good: Path) -> dict[str, tuple[Path, str]]:
    files = {}
    p = tmp / "random.mp4"
    p.write_bytes(os.urandom(50_000))
    files["corrupt"] = (p, "not a readable video")
    p = tmp / "empty.mp4"
    p.write_bytes(b"")
    files["empty"] = (p, "empty file")
    p = tmp / "notes.txt"
    p.write_text("this is not a video\n" * 100)
    files["text"] = (p, "not a video (FFmpeg reads it as tty)")
    p = tmp / "truncated.mp4"
    data = good.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    files["truncated"] = (p, "truncated")
    p = tmp / "cutfront.mp4"
    slow = write_test_video(tmp / "slow.mp4", frames=60, fps=30, width=320, height=240, faststart=False)
    p.write_bytes(slow.read_bytes()[: slow.stat().st_size // 2])  # index (moov) at the end: lost
    files["no_index"] = (p, "not a readable video")
    slow.unlink()
    p = tmp / "image.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(p), np.zeros((32, 32, 3), np.uint8))
    files["image"] = (p, "not a video (FFmpeg reads it as png_pipe)")
    p = tmp / "sound.wav"
    import wave

    with wave.open(str(p), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\x00\x01" * 8000)
    files["audio_only"] = (p, "no video stream")
    return files


def test_every_kind_of_bad_file_is_quarantined_with_a_reason(r, settings, clip_30fps, tmp_path):
    (tmp_path / "src").mkdir()
    bad = _bad_files(tmp_path / "src", clip_30fps)
    for path, _ in bad.values():
        _drop(path, settings)
    _drop(clip_30fps, settings, "good.mp4")
    ing = FileIngest(settings, r)
    outcomes = {p.name: ing.process(p) for p in sorted(Path(settings.ingest.watch_dir).glob("*.*"))}
    failed = Path(settings.ingest.watch_dir) / "failed"
    for kind, (path, reason) in bad.items():
        assert outcomes[path.name].status == "failed", kind
        assert (failed / path.name).exists(), kind
        text = (failed / (path.name + ".reason")).read_text()
        assert reason in text, (kind, text)
        assert len(text.strip().splitlines()) == 1
    assert outcomes["good.mp4"].status == "done"
    # Every file got an end-of-file marker, the failed ones with their error.
    eofs = {b.info["file"]: b.info for b in _entries(r, settings) if b.kind == "eof"}
    assert set(eofs) == set(outcomes)
    assert "error" in eofs["truncated.mp4"] and "error" not in eofs["good.mp4"]


@pytest.mark.parametrize(
    "limit, value, reason",
    [
        ("max_bytes", 1000, "bytes is over the limit"),
        ("max_width", 160, "320x240 is over the limit"),
        ("max_duration", 1.0, "s is over the limit"),
    ],
)
def test_oversized_files_are_quarantined(r, settings, clip_30fps, limit, value, reason):
    setattr(settings.ingest.limits, limit, value)
    out = FileIngest(settings, r).process(_drop(clip_30fps, settings))
    assert out.status == "failed" and reason in out.reason
    assert (Path(settings.ingest.watch_dir) / "failed" / (clip_30fps.name + ".reason")).exists()


def test_watch_loop_waits_for_a_file_to_stop_growing_and_keeps_going_after_bad_ones(r, settings, clip_30fps):
    settings.ingest.stable_seconds = 0.5
    watch = Path(settings.ingest.watch_dir)
    ing = FileIngest(settings, r)
    stop = threading.Event()
    t = threading.Thread(target=ing.run, args=(stop,), daemon=True)
    t.start()
    try:
        (watch / "bad.mp4").write_bytes(b"\x00" * 1000)
        growing = watch / "growing.mp4"
        data = clip_30fps.read_bytes()
        with open(growing, "wb") as f:  # written slowly, in pieces
            for i in range(0, len(data), len(data) // 5):
                f.write(data[i : i + len(data) // 5])
                f.flush()
                time.sleep(0.2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (watch / "done" / "growing.mp4").exists():
            time.sleep(0.1)
    finally:
        stop.set()
        t.join(10)
    assert (watch / "failed" / "bad.mp4.reason").exists()
    assert (watch / "done" / "growing.mp4").exists()
    eofs = [b for b in _entries(r, settings) if b.kind == "eof" and b.info["file"] == "growing.mp4"]
    assert len(eofs) == 1 and "error" not in eofs[0].info


def test_backpressure_blocks_instead_of_trimming_unread_entries(r, settings, clip_30fps):
    settings.ingest.sample, settings.ingest.every_nth, settings.ingest.batch_size = "every_nth", 1, 9  # 10 batches
    settings.ingest.high_water = 3
    keys = Keys(settings.redis.prefix)
    ing = FileIngest(settings, r)
    path = _drop(clip_30fps, settings)
    t = threading.Thread(target=ing.process, args=(path,), daemon=True)
    t.start()
    time.sleep(1.5)
    assert t.is_alive(), "ingest should be blocked on the high-water mark"
    assert r.xlen(keys.frames) == 3 and backlog(r, keys.frames) == 3
    first = [e.id for e in read_group(r, keys.frames, "c1", count=100, block_ms=10)]
    assert len(first) == 3
    ack(r, keys.frames, first)
    seen = 3
    deadline = time.monotonic() + 30
    while t.is_alive() and time.monotonic() < deadline:
        got = read_group(r, keys.frames, "c1", count=100, block_ms=100)
        ack(r, keys.frames, [e.id for e in got])
        seen += len(got)
    t.join(5)
    seen += len(read_group(r, keys.frames, "c1", count=100, block_ms=10))
    assert seen == 11  # 10 frame batches + end-of-file marker: none trimmed
    assert r.xlen(keys.frames) == 11


def _spawn_ingest(settings, watch: Path, env_extra: dict) -> subprocess.Popen:
    env = {
        **os.environ,
        "FORENSICS_REDIS__URL": settings.redis.url,
        "FORENSICS_REDIS__PREFIX": settings.redis.prefix,
        "FORENSICS_FACES__DETECTOR": "none",
        "FORENSICS_INGEST__FRAME_SIZE": "32",
        "FORENSICS_INGEST__SAMPLE": "every_nth",
        "FORENSICS_INGEST__BATCH_SIZE": "2",
        "FORENSICS_INGEST__STABLE_SECONDS": "0.1",
        "FORENSICS_INGEST__POLL_INTERVAL": "0.05",
        "FORENSICS_LOG_FORMAT": "json",
        **env_extra,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "forensics.cli", "ingest", "--watch", str(watch)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=watch.parent,
    )  # fmt: skip


def test_sigkill_mid_file_and_restart_adds_each_batch_exactly_once(r, settings, clip_30fps):
    """45 batches; the worker is killed while blocked on backpressure, and again at random points."""
    keys = Keys(settings.redis.prefix)
    watch = Path(settings.ingest.watch_dir)
    ensure_group(r, keys.frames)
    _drop(clip_30fps, settings)
    proc = _spawn_ingest(settings, watch, {"FORENSICS_INGEST__HIGH_WATER": "10"})
    deadline = time.monotonic() + 60
    while r.xlen(keys.frames) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert r.xlen(keys.frames) == 10  # blocked at the high-water mark, killed there
    consumed = [e for e in read_group(r, keys.frames, "c", count=1000, block_ms=10)]
    ack(r, keys.frames, [e.id for e in consumed])
    # Restart and kill twice more at arbitrary moments, then let it finish.
    for delay in (0.8, 0.5, None):
        proc = _spawn_ingest(settings, watch, {"FORENSICS_INGEST__HIGH_WATER": "1000"})
        if delay is None:
            deadline = time.monotonic() + 60
            while not (watch / "done" / clip_30fps.name).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.terminate()
        else:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        proc.wait(20)
    seqs = [b.seq for b in _entries(r, settings)]
    assert seqs == list(range(46)), seqs  # 45 batches of 2 frames + end-of-file, each once, in order
    frames = [i for b in _entries(r, settings) for i in b.frame_index]
    assert frames == list(range(90))
    assert (watch / "done" / clip_30fps.name).exists()
