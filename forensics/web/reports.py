"""Model versions for the Models page, and the one way a registry file reaches a browser.

A report file is served only when the version is a real version folder, the path is listed in
that version's manifest under ``report/``, the resolved file stays inside the version folder,
and its bytes still match the manifest's sha256. Anything else is "not found".
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import re
from typing import Any

from forensics.registry import MANIFEST, Registry

_VERSION_RE = re.compile(r"^v\d{4,}$")
SERVABLE = {".html", ".png", ".svg", ".json", ".txt", ".csv"}
MAX_REPORT_BYTES = 64 * 1024 * 1024


def _manifest(reg: Registry, version: str) -> dict[str, Any] | None:
    try:
        m = json.loads((reg.root / version / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and isinstance(m.get("files"), dict) else None


def report_files(manifest: dict[str, Any]) -> list[str]:
    """Paths (relative to the version) of the HTML reports a manifest lists."""
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    return sorted(p for p in files if p.startswith("report/") and p.endswith(".html"))


def report_file(reg: Registry, version: str, rel: str) -> tuple[bytes, str] | None:
    """(bytes, media type) of ``models/<version>/<rel>``, or None unless every rule above holds."""
    if not _VERSION_RE.match(version) or version not in reg.versions():
        return None
    manifest = _manifest(reg, version)
    if manifest is None or not rel.startswith("report/") or rel not in manifest["files"]:
        return None
    vdir = (reg.root / version).resolve()
    path = (vdir / rel).resolve()
    if not path.is_relative_to(vdir) or path.suffix.lower() not in SERVABLE or not path.is_file():
        return None
    if path.stat().st_size > MAX_REPORT_BYTES:
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest["files"][rel]:
        return None  # changed since the manifest was written: not the report of this version
    return data, mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def versions(reg: Registry) -> dict[str, Any]:
    """Every version (manifest fields, gate decisions, promotions, reports) and the promotion history."""
    rows = reg.describe()
    for row in rows:
        m = _manifest(reg, row["version"]) or {}
        row["reports"] = report_files(m)
        row["provenance"] = m.get("provenance")
    return {"current": reg.current(), "versions": rows[::-1], "history": reg.history()[::-1]}


def valid_version(version: Any) -> bool:
    return isinstance(version, str) and bool(_VERSION_RE.match(version))
