"""Versioned model registry on disk.

::

    models/<version>/model.onnx      float32 [N,3,S,S] in [0,1] -> logits [N], feat0.. [N,C_l]
    models/<version>/scorer.npz      Mahalanobis scorer (forensics.scoring)
    models/<version>/manifest.json   sha256 of every other file, input size, metrics, thresholds, parent
    models/<version>/report/         metrics.json, figures, report.html
    models/current                   symlink to the promoted version (swapped atomically)
    models/promotions.jsonl          promotion history, for rollback
    models/runs/<run id>.json        retraining run records (intake, screen, gate, decision)

A version whose files do not match its manifest is refused (ModelError), so a tampered or
half-copied artifact is never served.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from forensics.errors import ModelError
from forensics.provenance import synthetic_only

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
REQUIRED_FILES = ("model.onnx", "scorer.npz")
_VERSION_RE = re.compile(r"^v(\d{4,})$")


def check_version_name(root: Path, version: str) -> Path:
    """The folder of ``version`` under ``root``; raises ModelError unless the name is a version
    name (``vNNNN``) whose folder resolves inside the registry (no traversal, no symlink out)."""
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise ModelError(f"model version {str(version)[:80]!r} is not a version name (v0001, v0002, ...)")
    base = Path(root).resolve()
    vdir = (base / version).resolve()
    if vdir.parent != base:
        raise ModelError(f"model version {version} resolves outside the registry {base}")
    return vdir


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """A verified model version."""

    version: str
    path: Path
    manifest: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.path / "model.onnx"

    @property
    def scorer_path(self) -> Path:
        return self.path / "scorer.npz"

    @property
    def sha256(self) -> str:
        return self.manifest["files"]["model.onnx"]

    @property
    def input_size(self) -> int:
        return int(self.manifest["input_size"])


class Registry:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- versions -------------------------------------------------------------------------
    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        found = [p.name for p in self.root.iterdir() if p.is_dir() and not p.is_symlink() and _VERSION_RE.match(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    def new_version(self) -> tuple[str, Path]:
        """Reserve the next version number: creates ``models/vNNNN`` (mkdir is the lock)."""
        self.root.mkdir(parents=True, exist_ok=True)
        existing = self.versions()
        n = int(existing[-1][1:]) + 1 if existing else 1
        while True:
            version = f"v{n:04d}"
            try:
                (self.root / version).mkdir()
                return version, self.root / version
            except FileExistsError:
                n += 1

    def write_manifest(self, version: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Hash every file of the version and write its manifest (last step of a version)."""
        vdir = self.root / version
        for name in REQUIRED_FILES:
            if not (vdir / name).is_file():
                raise ModelError(f"model version {version} lacks {name}")
        files = {
            str(p.relative_to(vdir)): sha256_file(p)
            for p in sorted(vdir.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": version,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **fields,
            "files": files,
        }
        tmp = vdir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(tmp, vdir / MANIFEST)
        return manifest

    def load(self, version: str | None = None) -> Artifact:
        """The verified artifact of ``version`` (default: current). Raises ModelError."""
        if version is None:
            version = self.current()
            if version is None:
                raise ModelError(
                    f"no promoted model in {self.root}: train one (`forensics train`) or `forensics models promote VERSION`"
                )
        check_version_name(self.root, version)
        vdir = self.root / version
        mpath = vdir / MANIFEST
        if not mpath.is_file():
            raise ModelError(f"model version {version} has no manifest at {mpath}")
        try:
            manifest = json.loads(mpath.read_text())
            files = manifest["files"]
            if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
                raise ValueError("unknown manifest format")
        except (ValueError, KeyError, TypeError) as err:
            raise ModelError(f"model version {version}: manifest is malformed ({err})") from None
        for name in REQUIRED_FILES:
            if name not in files:
                raise ModelError(f"model version {version}: manifest does not list {name}")
        for name, digest in files.items():
            p = vdir / name
            if not p.is_file():
                raise ModelError(f"model version {version}: {name} is missing")
            actual = sha256_file(p)
            if actual != digest:
                raise ModelError(
                    f"model version {version}: {name} does not match its manifest sha256 "
                    f"({actual[:12]} != {digest[:12]}): refusing a tampered or incomplete artifact"
                )
        return Artifact(version, vdir, manifest)

    # -- promotion ------------------------------------------------------------------------
    def current(self) -> str | None:
        link = self.root / "current"
        if not link.is_symlink():
            return None
        return os.readlink(link).rstrip("/").split("/")[-1]

    def current_input_size(self) -> int | None:
        """Input size of the current version from its manifest (unverified; for defaults only)."""
        cur = self.current()
        try:
            return int(json.loads((self.root / cur / MANIFEST).read_text())["input_size"]) if cur else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def promote(self, version: str, *, reason: str = "") -> Artifact:
        """Verify ``version`` and point ``current`` at it atomically (symlink + rename)."""
        art = self.load(version)
        previous = self.current()
        tmp = self.root / f".current.{os.getpid()}.{time.monotonic_ns()}"
        os.symlink(version, tmp)
        os.replace(tmp, self.root / "current")
        with open(self.root / "promotions.jsonl", "a") as f:
            f.write(
                json.dumps(
                    {
                        "version": version,
                        "previous": previous,
                        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "reason": reason,
                    }
                )
                + "\n"
            )
        return art

    def history(self) -> list[dict[str, Any]]:
        path = self.root / "promotions.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def rollback(self) -> Artifact:
        """Promote the version that was current before the current one."""
        cur = self.current()
        for entry in reversed(self.history()):
            if entry["version"] == cur and entry.get("previous"):
                return self.promote(entry["previous"], reason=f"rollback from {cur}")
        raise ModelError(f"nothing to roll back to from {cur or 'no current model'}")

    # -- retraining run records -------------------------------------------------------------
    def write_run_record(self, record: dict[str, Any]) -> Path:
        """Write ``runs/<record['run_id']>.json`` atomically (rewritten as the run progresses)."""
        runs = self.root / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        path = runs / f"{record['run_id']}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, default=str))
        os.replace(tmp, path)
        return path

    def run_records(self) -> list[dict[str, Any]]:
        """Every run record, oldest first (unreadable files are skipped)."""
        out = []
        for path in sorted((self.root / "runs").glob("*.json")) if (self.root / "runs").is_dir() else []:
            try:
                out.append(json.loads(path.read_text()))
            except ValueError:
                continue
        return sorted(out, key=lambda rec: rec.get("started_at", 0))

    def describe(self) -> list[dict[str, Any]]:
        """One row per version for `forensics models list` (unverified: reads manifests only).

        Lineage: ``parent``, ``promotions`` (when and why it became current) and ``decisions``
        (the gate's decision of the retraining run that produced it).
        """
        cur = self.current()
        history = self.history()
        decisions: dict[str, list[dict[str, Any]]] = {}
        for rec in self.run_records():
            if rec.get("candidate"):
                decisions.setdefault(rec["candidate"], []).append(
                    {"run_id": rec.get("run_id"), "decision": rec.get("decision"), "reason": rec.get("reason")}
                )
        rows = []
        for v in self.versions():
            mpath = self.root / v / MANIFEST
            m: dict[str, Any] = {}
            if mpath.exists():
                try:
                    m = json.loads(mpath.read_text())
                except ValueError:
                    m = {}
            metrics = m.get("metrics", {})
            rows.append(
                {
                    "version": v,
                    "current": v == cur,
                    "created_at": m.get("created_at", "?"),
                    "parent": m.get("parent"),
                    "input_size": m.get("input_size"),
                    "auc": metrics.get("clean_video_auc", metrics.get("clean_auc")),
                    "provenance": m.get("provenance"),
                    "synthetic_only": synthetic_only(m.get("provenance")),
                    "complete": bool(m),
                    "promotions": [{"at": h.get("at"), "reason": h.get("reason")} for h in history if h["version"] == v],
                    "decisions": decisions.get(v, []),
                }
            )
        return rows
