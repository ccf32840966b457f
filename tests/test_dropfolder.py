"""Drop-folder hygiene (issue 16): links refused, files taken only when their writer is done.

Real redis-server, real H.264 in MP4 and MPEG-TS, written slowly by real writer threads.
"""

from __future__ import annotations

import json
import os
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import pytest

from forensics.containers import unfinished
from forensics.streams import Keys
from forensics.wire import decode
from tests.media import moving_pattern, write_test_video
from workers.ingest import FileIngest

FRAMES = 60  # 2 s at 30 fps; settings sample 2 fps by timestamp -> a handful of frames each


def write_ts(path: Path, frames: int = FRAMES, fps: int = 30) -> Path:
    with av.open(str(path), mode="w", format="mpegts") as out:
        s = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "x264-params": "keyint=15"})
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        s.codec_context.time_base = Fraction(1, fps)
        for i in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(moving_pattern(i, 96, 64), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def _eofs(r, settings) -> dict[str, dict]:
    keys = Keys(settings.redis.prefix)
    out = {}
    for _i, f in r.xrange(keys.frames):
        b = decode(f)
        if b.kind == "eof":
            assert b.info["file"] not in out, "two end markers for one file"
            out[b.info["file"]] = b.info
    return out


class Watcher:
    def __init__(self, settings, r):
        self.ing = FileIngest(settings, r)
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.ing.run, args=(self.stop,), daemon=True)

    def __enter__(self):
        self.t.start()
        return self.ing

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join(20)


def _wait(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_symlinks_inside_and_outside_are_quarantined_and_their_targets_never_ingested(r, settings, clip_30fps,
                                                                                       tmp_path):  # fmt: skip
    watch = Path(settings.ingest.watch_dir)
    watch.mkdir(parents=True)
    (watch / "sub").mkdir()
    inside = write_test_video(watch / "sub" / "inside.mp4", frames=30, fps=30, width=64, height=48)
    (watch / "out.mp4").symlink_to(clip_30fps)  # a readable video elsewhere
    (watch / "in.mp4").symlink_to(inside)
    (watch / "dangling.mp4").symlink_to(tmp_path / "nowhere.mp4")
    os.mkfifo(watch / "pipe.mp4")  # opening it would block the worker forever
    with Watcher(settings, r):
        assert _wait(lambda: len(list((watch / "failed").glob("*.reason"))) == 4)
    failed = watch / "failed"
    for name in ("out.mp4", "in.mp4", "dangling.mp4"):
        assert (failed / name).is_symlink()  # moved as a link
        assert "symbolic link" in (failed / f"{name}.reason").read_text()
    assert "not a regular file" in (failed / "pipe.mp4.reason").read_text()
    assert clip_30fps.exists() and inside.exists()  # targets untouched
    assert r.xlen(Keys(settings.redis.prefix).frames) == 0  # nothing of theirs reached Redis
    assert not r.keys(f"{settings.redis.prefix}:sources:*")


def _slow_writer(src: bytes, dest: Path, pauses: list[float], *, hold_open: bool) -> threading.Thread:
    """Writes ``src`` to ``dest`` in ``len(pauses)`` chunks, sleeping ``pauses[i]`` s after chunk i;
    keeps the file open, or opens, appends and closes it for every chunk."""
    chunk = 188 * (len(src) // 188 // len(pauses) + 1)  # whole TS packets: each piece looks complete

    def run():
        f = open(dest, "wb") if hold_open else None
        try:
            for n, i in enumerate(range(0, len(src), chunk)):
                g = f or open(dest, "ab")
                g.write(src[i : i + chunk])
                g.flush()
                if not hold_open:
                    g.close()
                time.sleep(pauses[n])
        finally:
            if f:
                f.close()
        run.finished_at = time.time()

    t = threading.Thread(target=run, daemon=True)
    t.fn = run
    t.start()
    return t


# held open: one 1.5 s pause, 5x the stability window; only "not closed by its writer" (inotify) waits it out.
# append-and-close: a writer slowing down; a fixed 0.4 s window would take the file at its 0.45 s pause,
# the window that scales with the gaps seen (2x the longest) does not.
WRITERS = {
    "held-open": ([0.1, 0.1, 0.1, 1.5, 0.1, 0.1, 0.1, 0.0], True),
    "append-and-close": ([0.2, 0.3, 0.45, 0.65, 0.9, 0.0], False),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_slow_writers_of_ts_and_mp4_are_read_only_when_complete(r, settings, tmp_path, writer):
    pauses, hold_open = WRITERS[writer]
    settings.ingest.stable_seconds = 0.3 if hold_open else 0.4
    watch = Path(settings.ingest.watch_dir)
    watch.mkdir(parents=True)
    ts = write_ts(tmp_path / "slow.ts").read_bytes()
    mp4 = write_test_video(tmp_path / "slow.mp4", frames=FRAMES, fps=30, width=96, height=64,
                           faststart=False).read_bytes()  # index (moov) at the end, like a camera  # fmt: skip
    assert unfinished(tmp_path / "slow.ts") is None and unfinished(tmp_path / "slow.mp4") is None
    with Watcher(settings, r):
        writers = [_slow_writer(ts, watch / "slow.ts", pauses, hold_open=hold_open),
                   _slow_writer(mp4, watch / "slow.mp4", pauses, hold_open=hold_open)]  # fmt: skip
        for w in writers:
            w.join(30)
        assert _wait(lambda: {"slow.ts", "slow.mp4"} <= {p.name for p in (watch / "done").iterdir()}, 30), \
            sorted(p.name for p in watch.rglob("*"))
    eofs = _eofs(r, settings)
    assert not list((watch / "failed").iterdir())  # the partial mp4 waited; it was not quarantined
    for name in ("slow.ts", "slow.mp4"):
        info = eofs[name]
        assert "error" not in info and info["frames_decoded"] == FRAMES, (name, info)
    # Moved to done/ only after the writer finished.
    for w, name in zip(writers, ("slow.ts", "slow.mp4")):
        assert (watch / "done" / name).stat().st_ctime >= w.fn.finished_at - 0.01


def test_a_truncated_ts_is_quarantined_as_truncated(r, settings, tmp_path):
    watch = Path(settings.ingest.watch_dir)
    watch.mkdir(parents=True)
    data = write_ts(tmp_path / "full.ts").read_bytes()
    (watch / "cut.ts").write_bytes(data[: len(data) // 2 + 100])  # mid-packet
    out = FileIngest(settings, r).process(watch / "cut.ts")
    assert out.status == "failed" and "truncated" in out.reason and "188-byte packets" in out.reason
    assert "truncated" in _eofs(r, settings)["cut.ts"]["error"]


def test_a_file_that_changes_while_read_is_read_again_and_gets_one_end_marker(r, settings, clip_30fps):
    watch = Path(settings.ingest.watch_dir)
    watch.mkdir(parents=True)
    path = watch / "grow.mp4"
    path.write_bytes(clip_30fps.read_bytes())
    ing = FileIngest(settings, r)
    real_batches = ing._batches

    def touching(*a, **k):  # the writer appends while the first read is under way
        for i, b in enumerate(real_batches(*a, **k)):
            if i == 0:
                with open(path, "ab") as f:
                    f.write(b"\0" * 10)
                os.utime(path, ns=(time.time_ns(), time.time_ns()))
            yield b

    ing._batches = touching
    assert ing.process(path).status == "changed" and path.exists()
    ing._batches = real_batches
    assert ing.process(path).status in ("done", "failed")
    assert list(_eofs(r, settings)) == ["grow.mp4"]
    progress = [json.dumps(k.decode()) for k in r.keys(f"{settings.redis.prefix}:ingest:*")]
    assert len(progress) == 1
