"""The cheaper second line (issue 17) through real ONNX Runtime on a tiny exported model: the crops and
their squeezed copies go through one batched call that scores exactly like one pass per squeezer, the
shipped candidate costs one extra model pass, and ``defence.npz`` keeps its calibration record."""

from __future__ import annotations

import numpy as np
import pytest

from forensics.defence import FILE_NAME, Defence, channel_features
from forensics.model import load_model
from forensics.scoring import fit_mahalanobis
from forensics.squeeze import SQUEEZERS
from tests.tinymodel import make_tiny_registry
from trainer.defence import CANDIDATES, SHIPPED

SIZE = 16


def tiny_defence(model, squeezers: tuple[str, ...]) -> Defence:
    """A defence over the tiny model's real outputs (Gaussians on random crops, fixed positive weights)."""
    rng = np.random.default_rng(0)
    inf = model.net.run(rng.integers(0, 256, (64, SIZE, SIZE, 3), dtype=np.uint8))
    channel = fit_mahalanobis(channel_features(inf), np.arange(64) % 2, layer_names=[f"ms{i}" for i in range(len(inf.stds))])
    n_layers = len(inf.features)
    d = Defence(blocks=("channel", "squeeze"), channel=channel, squeezers=squeezers,
                pooled_weights=np.full(n_layers, 1.0 / n_layers), pooled_bias=0.0,
                weights=np.linspace(0.1, 1.0, n_layers + 2 * len(squeezers)), bias=-1.0)  # fmt: skip
    return d.with_thresholds(0.0, 0.0, 0.05, {"fpr_target": 0.05, "crop": {"videos": 3, "sd": 0.01}})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    reg = make_tiny_registry(tmp_path_factory.mktemp("tiny-defence"), size=SIZE)
    return reg, load_model(reg, intra_op_threads=1)


@pytest.mark.parametrize("squeezers", [CANDIDATES[SHIPPED][2], tuple(SQUEEZERS)])
def test_one_batched_call_scores_like_one_pass_per_squeezer(tiny, squeezers):
    _, model = tiny
    d = tiny_defence(model, squeezers)
    model.defence = d
    images = np.random.default_rng(1).integers(0, 256, (12, SIZE, SIZE, 3), dtype=np.uint8)
    try:
        batched = model.score(images)
    finally:
        model.defence = None
    base = model.net.run(images)
    separate = d.score(model.scorer, base, [model.net.run(s) for s in d.squeeze(images)])
    np.testing.assert_allclose(batched.anomaly, separate, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batched.fake_prob, base.fake_prob, rtol=1e-6)
    assert np.array_equal(batched.anomalous, batched.anomaly > d.threshold)


def test_shipped_candidate_costs_one_extra_model_pass():
    blocks, _, squeezers = CANDIDATES[SHIPPED]
    assert "squeeze" in blocks and len(squeezers) == 1 and squeezers[0] in SQUEEZERS


def test_defence_file_keeps_its_calibration_record_and_old_files_load_without_one(tiny, tmp_path):
    _, model = tiny
    d = tiny_defence(model, CANDIDATES[SHIPPED][2])
    d.save(tmp_path / FILE_NAME)
    back = Defence.load(tmp_path / FILE_NAME)
    assert back.calibration == d.calibration and back.squeezers == d.squeezers and back.extra_passes == len(d.squeezers)
    with np.load(tmp_path / FILE_NAME) as npz:
        old = {k: npz[k] for k in npz.files if k != "calibration"}  # a file written before issue 17
    np.savez(tmp_path / "old.npz", **old)
    assert Defence.load(tmp_path / "old.npz").calibration == {}
