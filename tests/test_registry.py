"""Model registry: manifests with sha256 of every file, refusal of tampered artifacts, promotion."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from forensics.errors import ModelError
from forensics.registry import Registry
from forensics.runtime import OnnxDiscriminator
from tests.versions import write_version


def _version(reg: Registry, seed: int = 0) -> str:
    return write_version(reg, seed)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Two exported versions, made once (export takes seconds); tests work on copies."""
    root = tmp_path_factory.mktemp("registry")
    reg = Registry(root)
    _version(reg, 1), _version(reg, 2)
    return root


@pytest.fixture
def reg(template, tmp_path) -> Registry:
    shutil.copytree(template, tmp_path / "models")
    return Registry(tmp_path / "models")


def test_export_parity_and_manifest_hashes_every_file(reg):
    v = "v0001"
    art = reg.load(v)
    assert set(art.manifest["files"]) == {"model.onnx", "scorer.npz", "report/metrics.json"}
    assert not (art.path / "model.onnx.data").exists()  # weights embedded
    sess = OnnxDiscriminator(art.model_path)
    out = sess.run(np.zeros((3, 16, 16, 3), np.uint8))
    assert out.logits.shape == (3,) and [f.shape[0] for f in out.features] == [3, 3]


@pytest.mark.parametrize("victim", ["model.onnx", "scorer.npz", "report/metrics.json"])
def test_tampered_file_is_refused(reg, victim):
    v = "v0001"
    p = reg.root / v / victim
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=f"{victim} does not match its manifest sha256"):
        reg.load(v)


def test_missing_file_or_manifest_is_refused(reg):
    v = "v0001"
    (reg.root / v / "scorer.npz").unlink()
    with pytest.raises(ModelError, match="scorer.npz is missing"):
        reg.load(v)
    (reg.root / v / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="manifest is malformed"):
        reg.load(v)
    with pytest.raises(ModelError, match="no promoted model"):
        reg.load()


def test_promote_swaps_current_and_rollback_returns(reg):
    v1, v2 = "v0001", "v0002"
    assert reg.versions() == [v1, v2]
    assert reg.new_version()[0] == "v0003"
    reg.promote(v1)
    assert reg.current() == v1 and reg.load().version == v1
    reg.promote(v2)
    assert reg.current() == v2
    assert reg.rollback().version == v1 and reg.current() == v1
    hist = reg.history()
    assert [h["version"] for h in hist] == [v1, v2, v1] and hist[-1]["reason"] == "rollback from v0002"
    rows = reg.describe()
    assert [r["current"] for r in rows[:2]] == [True, False]


def test_promoting_a_tampered_version_is_refused_and_current_is_kept(reg):
    v1, v2 = "v0001", "v0002"
    reg.promote(v1)
    m = json.loads((reg.root / v2 / "manifest.json").read_text())
    m["files"]["model.onnx"] = "0" * 64
    (reg.root / v2 / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError):
        reg.promote(v2)
    assert reg.current() == v1
