"""The second line of defence (issue 8) on the session's real trained model, through real ONNX Runtime."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict

import numpy as np
import pytest
import torch

from forensics.defence import FILE_NAME, Defence
from forensics.errors import ModelError
from forensics.model import load_model
from forensics.registry import Registry
from forensics.verdicts import CropRecord, file_verdict, window_decision
from trainer import attacks
from trainer.data import as_float_tensor, load_recipe_splits
from trainer.defence import TorchDefence, crop_features, to_uint8
from trainer.models import LogitsOnly, WithChannelStats, load_discriminator


@pytest.fixture(scope="module")
def shipped(trained, one_torch_thread):
    """The trained version's worker model, its torch discriminator, and PGD-10 4/255 on every fake test crop."""
    cfg = trained["config"]
    model = load_model(Registry(trained["models_dir"]), trained["version"], intra_op_threads=1)
    D = load_discriminator(trained["models_dir"] / trained["version"] / "discriminator.pt")
    test = load_recipe_splits(cfg.data, asdict(cfg), cfg.cache_dir)["test"]
    fake = np.where(test.labels == 1)[0]
    x = as_float_tensor(test.images[fake])
    adv = to_uint8(attacks.pgd(LogitsOnly(D), x, torch.ones(len(fake)), 4 / 255, steps=10,
                               generator=torch.Generator().manual_seed(0)))  # fmt: skip
    return {"model": model, "D": D, "test": test, "fake": fake, "adv": adv}


def _margin(p1: float, n1: int, p0: float, n0: int) -> float:
    """Two binomial standard errors of the difference of two rates."""
    return 2 * math.sqrt(p1 * (1 - p1) / max(n1, 1) + p0 * (1 - p0) / max(n0, 1))


def test_version_ships_a_calibrated_defence_that_the_worker_model_uses(shipped):
    model = shipped["model"]
    assert model.defence is not None and model.defence.blocks
    assert np.isfinite(model.anomaly_threshold) and np.isfinite(model.track_threshold)
    s = model.score(shipped["test"].images[:8])
    assert s.anomaly.shape == (8,) and np.array_equal(s.anomalous, s.anomaly > model.defence.threshold)


def test_defence_flags_pgd_examples_that_fool_the_model_more_often_than_clean_crops(shipped):
    model, test, fake = shipped["model"], shipped["test"], shipped["fake"]
    clean = model.score(test.images)
    adv = model.score(shipped["adv"])
    fooled = (clean.fake_prob[fake] > model.frame_threshold) & (adv.fake_prob <= model.frame_threshold)
    assert fooled.sum() >= 5, "PGD fooled too few crops to measure detection"
    p1, p0 = float(adv.anomalous[fooled].mean()), float(clean.anomalous.mean())
    assert p1 - p0 > _margin(p1, int(fooled.sum()), p0, len(test)), (p1, p0, int(fooled.sum()))


def test_track_mean_score_separates_attacked_tracks_from_clean_ones(shipped):
    model, test, fake = shipped["model"], shipped["test"], shipped["fake"]
    clean = model.score(test.images)
    adv = model.score(shipped["adv"])

    def records(idx, scores, rows):
        return [CropRecord(int(test.frame_index[i]), None, int(test.video[i]), float(scores.fake_prob[r]),
                           float(scores.anomaly[r]), bool(scores.anomalous[r]), [0, 0, 1, 1])
                for i, r in zip(idx, rows)]  # fmt: skip

    eof = {"file": "x.mp4"}
    kw = {"threshold": model.video_threshold, "eof": eof, "track_anomaly_threshold": model.track_threshold}
    clean_tracks = file_verdict(records(np.arange(len(test)), clean, np.arange(len(test))), **kw)["tracks"]
    adv_tracks = file_verdict(records(fake, adv, np.arange(len(fake))), **kw)["tracks"]
    clean_means = np.array([t["anomaly_mean"] for t in clean_tracks.values()])
    adv_means = np.array([t["anomaly_mean"] for t in adv_tracks.values()])
    # Every attacked track scores above the median clean track, and more attacked than clean tracks are flagged.
    assert (adv_means > np.median(clean_means)).all(), (adv_means, clean_means)
    flagged_adv = np.mean([t["anomalous"] for t in adv_tracks.values()])
    flagged_clean = np.mean([t["anomalous"] for t in clean_tracks.values()])
    assert flagged_adv > flagged_clean, (flagged_adv, flagged_clean)


def test_onnx_runtime_defence_matches_the_torch_reference(shipped):
    model, D = shipped["model"], shipped["D"]
    images = np.concatenate([shipped["test"].images[:24], shipped["adv"][:24]])
    got = model.score(images).anomaly
    # Same numpy code on torch outputs (how the trainer fits it), and the differentiable torch port.
    via_torch = model.defence.combine(crop_features(model.defence, model.scorer, WithChannelStats(D), images))
    with torch.no_grad():
        port = TorchDefence(D, model.scorer, model.defence)(as_float_tensor(images))[1].numpy()
    np.testing.assert_allclose(port, via_torch, rtol=1e-6, atol=1e-6)
    # ONNX Runtime vs torch: float32 kernels differ by ~1e-6; the score follows to ~1e-4 of its spread.
    np.testing.assert_allclose(got, via_torch, rtol=0, atol=1e-3 * float(np.std(via_torch)) + 1e-6)


def test_defence_file_round_trips_and_a_bad_or_missing_one_is_refused_in_one_line(shipped, trained, tmp_path):
    src = trained["models_dir"] / trained["version"]
    d = Defence.load(src / FILE_NAME)
    d.save(tmp_path / FILE_NAME)
    again = Defence.load(tmp_path / FILE_NAME)
    assert again.blocks == d.blocks and again.squeezers == d.squeezers
    np.testing.assert_array_equal(again.weights, d.weights)
    assert (again.threshold, again.track_threshold) == (d.threshold, d.track_threshold)

    root = tmp_path / "models"
    shutil.copytree(src, root / trained["version"])
    reg = Registry(root)
    vdir = root / trained["version"]
    (vdir / FILE_NAME).write_bytes(b"not an npz")
    with pytest.raises(ModelError, match="defence.npz does not match") as err:
        reg.load(trained["version"])
    assert "\n" not in str(err.value)
    (vdir / FILE_NAME).unlink()
    with pytest.raises(ModelError, match="defence.npz is missing") as err:
        reg.load(trained["version"])
    assert "\n" not in str(err.value)
    # Hashed but unreadable: the worker model refuses it in one line.
    (vdir / FILE_NAME).write_bytes(b"not an npz")
    manifest = json.loads((vdir / "manifest.json").read_text())
    reg.write_manifest(trained["version"], {k: v for k, v in manifest.items() if k not in ("files", "format", "version")})
    with pytest.raises(ModelError, match="defence file .* unreadable") as err:
        load_model(reg, trained["version"])
    assert "\n" not in str(err.value)
    # A version from before issue 8 (no defence.npz) still loads and scores with the pooled scorer.
    (vdir / FILE_NAME).unlink()
    reg.write_manifest(trained["version"], {k: v for k, v in manifest.items() if k not in ("files", "format", "version")})
    old = load_model(reg, trained["version"])
    assert old.defence is None and old.track_threshold is None
    s = old.score(shipped["test"].images[:4])
    np.testing.assert_allclose(s.anomaly, old.scorer.score(old.net.run(shipped["test"].images[:4]).features))


def test_live_window_and_file_track_rules_use_the_track_threshold():
    kw = {"threshold": 0.5, "margin": 0.05, "min_faces": 3, "anomaly_rate": 0.5}
    # No crop over its own threshold, but the window's mean score is over the track threshold.
    d = window_decision([0.1] * 4, [False] * 4, {}, scores=[2.0, 2.5, 3.0, 2.2], track_threshold=2.0, **kw)
    assert d.anomaly == "on"
    assert window_decision([0.1] * 4, [False] * 4, {}, scores=[1.0] * 4, track_threshold=2.0, **kw).anomaly is None
    assert window_decision([0.1] * 4, [False] * 4, {"anomaly": "on"}, scores=[1.0] * 4, track_threshold=2.0,
                           **kw).anomaly == "off"  # fmt: skip
    recs = [CropRecord(i, None, t, 0.2, a, False, [0, 0, 1, 1]) for i, (t, a) in enumerate([(0, 3.0)] * 4 + [(1, 0.5)] * 4)]
    v = file_verdict(recs, threshold=0.5, eof={"file": "f"}, track_anomaly_threshold=2.0)
    assert v["anomalous_tracks"] == 1 and v["tracks"]["0"]["anomalous"] and not v["tracks"]["1"]["anomalous"]
