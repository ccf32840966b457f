"""The saliency figure of ``forensics explain``, for the verdict page, when the trainer extra is installed.

It runs as a child process (``python -m forensics.cli explain``), one at a time, cached per alert under
``state_dir/web/explain/``: ``forensics/`` never imports ``trainer/`` and the web process never loads torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from forensics.alerts import find_alert
from forensics.web.console import alert_id_param, console_of, error, need

_HOWTO_EXPLAIN = "saliency figures need the trainer extra: pip install 'video-forensics[train]' (then reload)"


def explain_cache_name(alert_id: str) -> str:
    """A file name for an alert's saliency figure (sha1 of the id: any id, no path characters)."""
    return hashlib.sha1(alert_id.encode()).hexdigest() + ".png"


def explain_cache_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "web" / "explain"


def explain_status() -> dict:
    """{"available": bool, "howto": one line or None}, for the verdict page."""
    ok = _explain_available()
    return {"available": ok, "howto": None if ok else _HOWTO_EXPLAIN}


def _explain_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "matplotlib", "trainer"))


def api_explain(request: Request) -> Response:
    need(request)
    c = console_of(request)
    aid = alert_id_param(request)
    if not _explain_available():
        return error(501, _HOWTO_EXPLAIN)
    c.redis.run(lambda r: find_alert(r, c.keys, aid))  # 404 for an unknown id before any work
    out = explain_cache_dir(c.settings.state_dir) / explain_cache_name(aid)
    with c.explain_lock:  # one torch process at a time on a shared machine
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "FORENSICS_REDIS__URL": c.redis.url, "FORENSICS_REDIS__PREFIX": c.keys.prefix,
                   "FORENSICS_MODELS_DIR": str(c.settings.models_dir), "FORENSICS_STATE_DIR": str(c.settings.state_dir)}  # fmt: skip
            argv = [sys.executable, "-m", "forensics.cli", *(["--config", c.config] if c.config else []),
                    "explain", aid, "--out", str(out)]  # fmt: skip
            try:
                done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                                      timeout=c.settings.web.explain_timeout_s)  # fmt: skip
            except subprocess.TimeoutExpired:
                return error(504, f"the saliency figure took over {c.settings.web.explain_timeout_s:.0f} s")
            if done.returncode != 0 or not out.exists():
                line = (done.stderr.strip().splitlines() or ["explain failed"])[-1]
                return error(422, line.removeprefix("forensics: error: "))
    return FileResponse(str(out), media_type="image/png")
