"""Which model a detect worker should serve: the announcement on Redis, checked like an artifact.

The ``<prefix>:model`` key (``forensics.announce``) names a version and its sha256. A worker
trusts neither: the name must be a registry version name (``vNNNN``, resolving inside the
registry), and the announced sha256 must equal the one in that version's manifest (which is
itself checked against the files by :meth:`forensics.registry.Registry.load`). Without an
announcement the registry's ``current`` is wanted.

A refused version is remembered with a fingerprint of its folder (names, sizes, mtimes) and the
announcement that named it; it is tried again when either changes (a repaired artifact, a new
announcement), never every second. A malformed announcement is logged once per payload.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from forensics.errors import ModelError
from forensics.registry import Registry, check_version_name

_SHA256_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Wanted:
    version: str
    sha256: str | None  # announced digest of model.onnx; None when not announced (registry current)
    announcement: bytes | None  # the raw announcement, to tell a new one from the same one


class ModelWatch:
    def __init__(self, registry: Registry, r: redis.Redis, key: str, log: Any):
        self.registry = registry
        self.r = r
        self.key = key
        self.log = log
        self._bad_payload: bytes | None = None
        self._refused: dict[tuple[str, str | None, bytes | None], tuple] = {}

    def wanted(self) -> Wanted | None:
        """The version to serve, or None (nothing usable announced or promoted)."""
        raw = self.r.get(self.key)
        if raw:
            try:
                return self._parse(raw)
            except ModelError as err:
                if raw != self._bad_payload:
                    self._bad_payload = raw
                    self.log.warning("ignoring malformed model announcement", key=self.key, error=str(err))
                return None  # keep serving what we have; a bad announcement is not "fall back"
        current = self.registry.current()
        if current is None:
            return None
        try:
            check_version_name(self.registry.root, current)
        except ModelError as err:
            if self._bad_payload != b"current:" + current.encode(errors="replace"):
                self._bad_payload = b"current:" + current.encode(errors="replace")
                self.log.warning("ignoring the registry's current link", error=str(err))
            return None
        return Wanted(current, None, None)

    def _parse(self, raw: bytes) -> Wanted:
        try:
            msg = json.loads(raw)
        except ValueError as err:
            raise ModelError(f"not JSON ({err})") from None
        if not isinstance(msg, dict):
            raise ModelError("not a JSON object")
        version, sha = msg.get("version"), msg.get("sha256")
        if not isinstance(version, str):
            raise ModelError(f"version {version!r} is not a string")
        check_version_name(self.registry.root, version)
        if sha is not None and not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= _SHA256_HEX):
            raise ModelError(f"sha256 {str(sha)[:80]!r} is not 64 lowercase hex digits")
        return Wanted(version, sha, raw)

    @staticmethod
    def mismatch(wanted: Wanted, actual: str) -> str:
        return (f"model version {wanted.version}: announced sha256 {wanted.sha256[:12]} is not its manifest's "
                f"{actual[:12]}: refusing an announcement that does not match the artifact")  # fmt: skip

    def refuse(self, wanted: Wanted) -> None:
        self._refused[(wanted.version, wanted.sha256, wanted.announcement)] = self._fingerprint(wanted.version)

    def refused(self, wanted: Wanted) -> bool:
        """True while ``wanted`` was refused and neither its files nor its announcement changed."""
        key = (wanted.version, wanted.sha256, wanted.announcement)
        if key not in self._refused:
            return False
        if self._refused[key] == self._fingerprint(wanted.version):
            return True
        del self._refused[key]  # repaired (or changed): try again
        return False

    def _fingerprint(self, version: str) -> tuple:
        root = self.registry.root / version
        out = []
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                try:
                    st = os.stat(Path(dirpath) / name)
                except OSError:
                    continue
                out.append((os.path.relpath(Path(dirpath) / name, root), st.st_size, st.st_mtime_ns))
        return tuple(sorted(out))
