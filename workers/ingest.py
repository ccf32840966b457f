"""File-drop ingest: watch a folder, decode each complete file, put FrameBatches on the stream.

Policy for files: wait, lose nothing. Adding a batch blocks while the detect group's backlog
is over the high-water mark. Each batch is added in one MULTI/EXEC together with the file's
progress counter, so a worker killed mid-file and restarted re-decodes the file, skips the
batches already on the stream, and adds each batch exactly once with the same sequence
numbers. A file moves to ``done/`` after its end-of-file marker is on the stream; a file
that cannot be used moves to ``failed/`` beside a ``.reason`` file, and the worker goes on.

A lost Redis connection pauses the file where it is (:class:`forensics.outage.Outage`: logged
once, retried with capped exponential backoff); a write whose reply was lost is checked against
the file's progress counter before it is retried, so it is never added twice.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import redis

from forensics.config import Settings, resolve_frame_size
from forensics.containers import TS_SUFFIXES, unfinished
from forensics.errors import BadVideo
from forensics.faces import Crop, FaceCropper, build_cropper
from forensics.logs import get_logger
from forensics.outage import REDIS_DOWN, Outage
from forensics.streams import Keys, ensure_group, replicated, wait_below_high_water
from forensics.timestamps import now_iso
from forensics.video import DecodedFrame, FrameSampler, decode_file
from forensics.wire import FrameBatch, encode
from workers.dropfolder import DropFolder

# Progress of a finished file is kept this long, so a crash between the end-of-file marker and
# the move to done/ is recovered without re-adding anything.
_PROGRESS_TTL_S = 7 * 24 * 3600


class _Stopped(Exception):
    """Stop was asked while waiting for Redis to come back."""


@dataclass
class FileOutcome:
    path: Path
    source: str
    status: str  # done | failed | stopped | changed (still being written: read again later)
    batches: int = 0
    skipped_batches: int = 0  # already on the stream from an earlier, interrupted run
    images: int = 0
    reason: str = ""
    stats: dict = field(default_factory=dict)


def file_key(path: Path) -> str:
    """Identity of a dropped file: name, size and mtime (a re-dropped edit is a new file)."""
    st = path.stat()
    return hashlib.sha1(f"{path.name}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def source_id_for(path: Path, key: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:48] or "file"
    return f"{stem}-{key[:8]}"


class FileIngest:
    """Ingests files dropped into ``settings.ingest.watch_dir`` onto ``<prefix>:frames``."""

    def __init__(self, settings: Settings, r: redis.Redis, *, cropper: FaceCropper | None = None):
        ing = settings.ingest
        if ing.watch_dir is None:
            raise ValueError("ingest.watch_dir is not set")
        self.settings = settings
        self.r = r
        self.keys = Keys.for_settings(settings)
        self.watch = Path(ing.watch_dir)
        self.done_dir = Path(ing.done_dir or self.watch / "done")
        self.failed_dir = Path(ing.failed_dir or self.watch / "failed")
        for d in (self.watch, self.done_dir, self.failed_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.cropper = cropper if cropper is not None else build_cropper(settings.faces, resolve_frame_size(settings))
        self.drops = DropFolder(self.watch, ing.stable_seconds, incomplete_timeout_s=ing.incomplete_timeout_s)
        self.log = get_logger()
        self.outage = Outage("file ingest", self.log, base_s=settings.redis.retry_base_s,
                             cap_s=settings.redis.retry_cap_s)  # fmt: skip
        self._stop: threading.Event | None = None
        for stream in self.keys.frames_shards:
            ensure_group(r, stream)

    # -- the loop -------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self.log.info("watching for dropped files", watch_dir=str(self.watch), detector=self.settings.faces.detector)
        try:
            while not stop.is_set():
                ready, refused = self.drops.scan()
                for path, why in refused:
                    self.refuse(path, why)
                for path in ready:
                    if stop.is_set():
                        break
                    self.process(path, stop)
                    self.drops.forget(path)
                stop.wait(self.settings.ingest.poll_interval)
        finally:
            self.drops.close()

    def refuse(self, path: Path, why: str) -> None:
        """Quarantine an entry that is not ours (a symlink, a device, ...) without reading it."""
        self._move(path, "failed", f"{path.name}: {why}")
        self.log.warning("refused a dropped entry", file=path.name, reason=why, folder=str(self.failed_dir))

    def _redis(self, op, applied=None):
        """``op()``; while Redis is away, pause and retry with backoff. ``applied()`` tells whether
        a try whose reply was lost took effect (then it is not repeated). Raises _Stopped on stop."""
        tried = False
        while True:
            try:
                result = None if tried and applied is not None and applied() else op()
                self.outage.ok()
                return result
            except REDIS_DOWN as err:
                tried = True
                if self.outage.wait(err, self._stop):
                    raise _Stopped from None

    # -- one file -------------------------------------------------------------------------
    def process(self, path: Path, stop: threading.Event | None = None) -> FileOutcome:
        """Ingest one complete file. Never raises for a bad file: it is quarantined instead."""
        self._stop = stop
        try:
            return self._process(path, stop)
        except _Stopped:
            self.log.info("stopped while Redis was away; will resume", file=path.name)
            return FileOutcome(path, "", "stopped")

    def _process(self, path: Path, stop: threading.Event | None) -> FileOutcome:
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):  # swapped for a link since the folder scan: never read it
                self.refuse(path, "not a regular file (replaced after it was dropped): refused, not read")
                return FileOutcome(path, "", "failed", reason="not a regular file")
            key = file_key(path)
        except FileNotFoundError:
            return FileOutcome(path, "", "failed", reason="file vanished before ingest")
        source = source_id_for(path, key)
        log = self.log.bind(source=source, file=path.name)
        progress_key = self.keys.ingest_progress(key, source)
        raw = self._redis(lambda: self.r.hgetall(progress_key))
        progress = {k.decode(): v.decode() for k, v in raw.items()}
        if progress.get("eof") == "1":
            # Crashed after the end-of-file marker but before the move: only the move is left.
            status = progress.get("status", "done")
            reason = progress.get("reason", "")
            self._move(path, status, reason)
            log.info("recovered finished file", status=status)
            return FileOutcome(path, source, status, reason=reason)
        already = int(progress.get("written", 0))
        out = FileOutcome(path, source, "done", skipped_batches=already)
        stats: dict = {}
        self._set_source(source, path, state="ingesting", started_at=now_iso())
        log.info("ingesting file", resume_from_batch=already or None)
        seq = 0
        try:
            for batch in self._batches(path, source, stats):
                if stop is not None and stop.is_set():
                    out.status = "stopped"
                    log.info("stopped mid-file; will resume", batches=seq)
                    return out
                if seq >= already:
                    self._add(batch, progress_key, seq)
                    out.batches += 1
                    out.images += len(batch)
                seq += 1
            cut = unfinished(path) if path.suffix.lower() in TS_SUFFIXES else None
            if cut is not None:  # the decoder cannot tell a TS that stops short; its packets can
                raise BadVideo(f"{path.name}: truncated: {cut}")
        except BadVideo as err:
            out.status, out.reason = "failed", str(err)
        if _changed(path, st):
            # Still being written after all: what was read is dropped (its aggregate expires);
            # the finished file is a new file (new key) and gets the one verdict.
            self._redis(lambda: self.r.delete(progress_key))
            log.warning("file changed while it was read; it will be read again when complete")
            return FileOutcome(path, source, "changed")
        out.stats = {k: v for k, v in stats.items() if k != "info"}
        self._finish(path, source, progress_key, seq, out, log)
        return out

    def _batches(self, path: Path, source: str, stats: dict) -> Iterator[FrameBatch]:
        ing = self.settings.ingest
        sampler = FrameSampler(ing.sample, every_nth=ing.every_nth, fps=ing.fps)
        frames = decode_file(path, ing.limits, sampler, threads=ing.decode_threads, info_out=stats)
        pending: list[tuple[DecodedFrame, Crop, float]] = []
        stats["no_face_frames"] = 0
        seq = 0
        self.cropper.reset()
        frame_size = (0, 0)
        for df in frames:
            wall = time.time()
            frame_size = (df.frame.width, df.frame.height)
            crops = self.cropper.crops(df)
            if not crops:
                stats["no_face_frames"] += 1
            for crop in crops:
                pending.append((df, crop, wall))
                if len(pending) == ing.batch_size:
                    yield self._make_batch(source, seq, pending, frame_size)
                    seq += 1
                    pending = []
        if pending:
            yield self._make_batch(source, seq, pending, frame_size)

    @staticmethod
    def _make_batch(source: str, seq: int, items: list, frame_size: tuple[int, int]) -> FrameBatch:
        return FrameBatch(
            source=source,
            seq=seq,
            source_kind="file",
            images=np.stack([it[1].image for it in items]),
            frame_index=[it[0].index for it in items],
            pts=[it[0].pts for it in items],
            wall=[it[2] for it in items],
            box=[list(map(int, it[1].box)) for it in items],
            track=[it[1].track for it in items],
            landmarks=[it[1].wire_landmarks() for it in items],
            region=[list(map(int, it[1].region)) for it in items],
            frame_size=frame_size,
        )

    def _add(self, batch: FrameBatch, progress_key: str, seq: int) -> None:
        fields = encode(batch)
        frames = self.keys.frames_for(batch.source)

        def add() -> None:
            wait_below_high_water(self.r, frames, self.settings.ingest.high_water, stop=self._stop)
            with replicated(self.r, self.keys, frames) as c:  # on a cluster: survives a failover once written
                pipe = c.pipeline(transaction=True)
                pipe.xadd(frames, fields)
                pipe.hset(progress_key, mapping={"written": seq + 1, "source": batch.source})
                pipe.expire(progress_key, _PROGRESS_TTL_S)  # a file abandoned mid-way leaves nothing for ever
                pipe.execute()

        self._redis(add, applied=lambda: int(self.r.hget(progress_key, "written") or 0) > seq)

    def _finish(self, path: Path, source: str, progress_key: str, seq: int, out: FileOutcome, log) -> None:
        info = {
            "file": path.name,
            "batches": seq,
            "frames_decoded": out.stats.get("decoded", 0),
            "frames_sampled": out.stats.get("sampled", 0),
            "no_face_frames": out.stats.get("no_face_frames", 0),
        }
        if out.status == "failed":
            info["error"] = out.reason
        eof = encode(FrameBatch(source=source, seq=seq, source_kind="file", kind="eof", info=info))
        frames = self.keys.frames_for(source)

        def add_eof() -> None:
            wait_below_high_water(self.r, frames, self.settings.ingest.high_water, stop=self._stop)
            with replicated(self.r, self.keys, frames) as c:
                pipe = c.pipeline(transaction=True)
                pipe.xadd(frames, eof)
                pipe.hset(progress_key, mapping={"eof": 1, "status": out.status, "reason": out.reason, "written": seq})
                pipe.expire(progress_key, _PROGRESS_TTL_S)
                pipe.execute()

        self._redis(add_eof, applied=lambda: self.r.hget(progress_key, "eof") == b"1")
        self._move(path, out.status, out.reason)
        self._set_source(
            source,
            path,
            state=out.status,
            finished_at=now_iso(),
            batches=seq,
            frames_decoded=info["frames_decoded"],
            frames_sampled=info["frames_sampled"],
            no_face_frames=info["no_face_frames"],
            reason=out.reason,
        )
        if out.status == "failed":
            log.warning("file quarantined", reason=out.reason, folder=str(self.failed_dir))
        else:
            log.info("file ingested", batches=seq, images=out.images, **{k: info[k] for k in ("frames_sampled",)})

    def _move(self, path: Path, status: str, reason: str) -> None:
        folder = self.failed_dir if status == "failed" else self.done_dir
        target = _free_name(folder / path.name)
        if os.path.lexists(path):  # a link is moved as a link: its target is never touched
            shutil.move(str(path), target)
        if status == "failed":
            Path(str(target) + ".reason").write_text(f"{reason}\n")

    def _set_source(self, source: str, path: Path, **fields) -> None:
        mapping = {"kind": "file", "file": path.name, **{k: str(v) for k, v in fields.items()}}
        key = self.keys.source(source)

        def write() -> None:
            pipe = self.r.pipeline(transaction=True)
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, self.settings.ingest.source_ttl_s)  # per-file hashes must not pile up
            pipe.execute()

        self._redis(write)


def _changed(path: Path, before: os.stat_result) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False  # gone: finish with what was read
    return (st.st_size, st.st_mtime_ns, st.st_ino) != (before.st_size, before.st_mtime_ns, before.st_ino)


def _free_name(target: Path) -> Path:
    if not os.path.lexists(target):
        return target
    for i in range(1, 10_000):
        alt = target.with_name(f"{target.stem}.{i}{target.suffix}")
        if not os.path.lexists(alt):
            return alt
    raise OSError(f"no free name for {target}")
