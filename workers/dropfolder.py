"""The watch folder: which dropped files are ours, and which are finished.

Refused (quarantined with a reason; the target is never opened): symbolic links, anything whose
path resolves outside the watch folder, anything that is not a regular file.

A file is taken only when its writer is done with it:

- where inotify is available, a file that was created or modified and not yet closed by its
  writer (``IN_CLOSE_WRITE``) is being written, however long the writer pauses;
- its size and mtime must be unchanged for a window that grows with the gaps seen between its
  growth steps (twice the longest gap, at least ``stable_seconds``, at most ``max_window_s``),
  so a slow writer that opens, appends and closes every few seconds is waited for too;
- its container must look finished (:func:`forensics.containers.unfinished`): an MP4 without
  its index yet or a TS cut mid-packet waits (it is not quarantined) until it is complete, or
  until it has not changed for ``incomplete_timeout_s`` (then the decoder judges it).
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from forensics.containers import unfinished
from forensics.logs import get_logger

# Names that are still being written by common tools, or are ours.
PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".reason", ".download")


@dataclass
class _Track:
    sig: tuple[int, int]  # size, mtime_ns
    changed_at: float  # monotonic time the signature last changed (or was first seen)
    gap: float = 0.0  # longest time seen between two changes, s
    waiting: str | None = None  # why an unfinished container is waited for (logged once)


class _CloseWrite:
    """inotify on the folder: names opened for writing and not closed yet (Linux only)."""

    def __init__(self, folder: Path):
        from inotify_simple import INotify, flags

        self.flags = flags
        self.ino = INotify(nonblocking=True)
        mask = flags.CREATE | flags.MODIFY | flags.CLOSE_WRITE | flags.MOVED_TO | flags.MOVED_FROM | flags.DELETE
        self.ino.add_watch(str(folder), mask)
        self.writing: set[str] = set()

    def poll(self) -> None:
        f = self.flags
        for ev in self.ino.read(timeout=0):
            if ev.mask & f.Q_OVERFLOW:
                self.writing.clear()  # events lost: fall back to the stability window
            elif ev.mask & (f.CREATE | f.MODIFY):
                self.writing.add(ev.name)
            elif ev.mask & (f.CLOSE_WRITE | f.MOVED_TO | f.MOVED_FROM | f.DELETE):
                self.writing.discard(ev.name)

    def close(self) -> None:
        self.ino.close()


class DropFolder:
    def __init__(self, folder: Path, stable_seconds: float, *, incomplete_timeout_s: float = 600.0,
                 max_window_s: float = 120.0, use_inotify: bool = True):  # fmt: skip
        self.folder = Path(folder)
        self.root = self.folder.resolve()
        self.stable_seconds = stable_seconds
        self.incomplete_timeout_s = incomplete_timeout_s
        self.max_window_s = max_window_s
        self.log = get_logger()
        self._seen: dict[str, _Track] = {}
        self.inotify: _CloseWrite | None = None
        if use_inotify:
            try:
                self.inotify = _CloseWrite(self.folder)
            except (ImportError, OSError) as err:  # not Linux, or out of watches: windows only
                self.log.info("no inotify on the watch folder; using the stability window only", error=str(err))

    def scan(self, now: float | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
        """(files ready to ingest, [(entry, why it is refused)]), both sorted by name."""
        now = time.monotonic() if now is None else now
        if self.inotify is not None:
            self.inotify.poll()
        ready: list[Path] = []
        refused: list[tuple[Path, str]] = []
        present = set()
        for entry in sorted(os.scandir(self.folder), key=lambda e: e.name):
            name = entry.name
            if name.startswith(".") or name.lower().endswith(PARTIAL_SUFFIXES):
                continue
            path = Path(entry.path)
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                continue  # done/, failed/ and anyone's subfolders
            why = self._refusal(path, st)
            if why:
                refused.append((path, why))
                continue
            present.add(name)
            if self._is_ready(name, path, (st.st_size, st.st_mtime_ns), now):
                ready.append(path)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return ready, refused

    def _refusal(self, path: Path, st: os.stat_result) -> str | None:
        if stat.S_ISLNK(st.st_mode):
            return "a symbolic link: refused, its target is not read"
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        if path.resolve().parent != self.root:
            return "resolves outside the watch folder: refused"
        return None

    def _is_ready(self, name: str, path: Path, sig: tuple[int, int], now: float) -> bool:
        t = self._seen.get(name)
        if t is None:
            self._seen[name] = _Track(sig, now)
            if self.stable_seconds > 0:
                return False
            t = self._seen[name]
        elif t.sig != sig:
            t.gap = max(t.gap, now - t.changed_at)
            t.sig, t.changed_at = sig, now
            return False
        window = min(self.max_window_s, max(self.stable_seconds, 2 * t.gap))
        if now - t.changed_at < window:
            return False
        if self.inotify is not None and name in self.inotify.writing:
            return False
        why = unfinished(path)
        if why is not None and now - t.changed_at < self.incomplete_timeout_s:
            if t.waiting != why:
                t.waiting = why
                self.log.info("waiting for the rest of a file", file=name, why=why)
            return False
        return True

    def forget(self, path: Path) -> None:
        self._seen.pop(path.name, None)

    def close(self) -> None:
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None
