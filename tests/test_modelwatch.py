"""Model announcements checked like artifacts (issue 16), on a real registry, Redis and ONNX Runtime."""

from __future__ import annotations

import json
import shutil

import pytest

from forensics.config import load_settings
from forensics.logs import configure_logging
from forensics.registry import Registry, sha256_file
from forensics.streams import Keys
from tests.tinymodel import copy_registry
from workers.detect import DetectWorker


@pytest.fixture(autouse=True)
def info_logging():
    """These tests read the worker's log lines: an earlier in-process CLI run may have left the level higher."""
    configure_logging("detect", "info", "json")


@pytest.fixture
def worker(tmp_path, redis_url, prefix, tiny_models, r):
    copy_registry(tiny_models, tmp_path / "models")
    s = load_settings(state_dir=tmp_path / "state", models_dir=tmp_path / "models", log_format="json",
                      redis={"url": redis_url, "prefix": prefix}, detect={"providers": ["CPUExecutionProvider"]})  # fmt: skip
    w = DetectWorker(s, r, consumer="w1")
    w.load_initial()
    assert w.model.artifact.version == "v0001"
    return w


def _announce(r, w, **msg):
    r.set(Keys(w.settings.redis.prefix).model, json.dumps(msg))


def _sha(w, version):
    return json.loads((Registry(w.settings.models_dir).root / version / "manifest.json").read_text())["files"][
        "model.onnx"
    ]


def test_an_announcement_whose_sha256_is_not_the_manifests_is_refused(r, worker):
    _announce(r, worker, version="v0002", sha256="0" * 64)
    assert not worker.maybe_reload() and worker.model.artifact.version == "v0001"
    _announce(r, worker, version="v0002", sha256=_sha(worker, "v0002"))  # the next announcement: tried again
    assert worker.maybe_reload() and worker.model.artifact.version == "v0002"


@pytest.mark.parametrize("name", ["../elsewhere/v0002", "/tmp/v0002", "v0002/..", "current", "v2"])
def test_a_version_name_outside_the_registry_pattern_is_never_loaded(r, worker, tmp_path, name, capsys):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(worker.registry.root / "v0002", elsewhere / "v0002")  # a valid artifact, outside
    _announce(r, worker, version=name, sha256=_sha(worker, "v0002"))
    for _ in range(5):
        assert not worker.maybe_reload()
    assert worker.model.artifact.version == "v0001"
    lines = [line for line in capsys.readouterr().err.splitlines() if "malformed model announcement" in line]
    assert len(lines) == 1 and "version name" in lines[0]  # logged once, not every second


def test_a_refused_version_is_retried_once_repaired(r, worker):
    onnx = worker.registry.root / "v0002" / "model.onnx"
    good = onnx.read_bytes()
    onnx.write_bytes(good[:-10] + bytes(b ^ 1 for b in good[-10:]))  # tampered
    _announce(r, worker, version="v0002", sha256=_sha(worker, "v0002"))
    assert not worker.maybe_reload()
    assert not worker.maybe_reload()  # same files, same announcement: not tried again
    onnx.write_bytes(good)  # repaired
    assert sha256_file(onnx) == _sha(worker, "v0002")
    assert worker.maybe_reload() and worker.model.artifact.version == "v0002"


def test_malformed_announcements_are_logged_once_and_the_model_keeps_serving(r, worker, capsys):
    for payload in (b"{not json", b"[1]", json.dumps({"version": "v0002", "sha256": "xyz"}).encode()):
        r.set(Keys(worker.settings.redis.prefix).model, payload)
        for _ in range(4):
            assert not worker.maybe_reload()
    err = capsys.readouterr().err
    assert err.count("malformed model announcement") == 3
    assert worker.model.artifact.version == "v0001"
