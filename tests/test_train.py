"""The trainer end to end on generated data: per-epoch curves, calibration, export, registry; DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from forensics.registry import Registry
from forensics.runtime import OnnxDiscriminator
from forensics.scoring import MahalanobisScorer
from trainer.data import CropCache, CropConfig, read_dataset


def test_training_registers_a_verified_promoted_artifact(trained):
    reg = Registry(trained["models_dir"])
    art = reg.load()
    assert art.version == trained["version"] and trained["promoted"]
    m = art.manifest
    assert m["input_size"] == 64 and m["outputs"] == ["logits", "feat0", "feat1", "feat2", "feat3",
                                                      "std0", "std1", "std2", "std3"]  # fmt: skip
    assert set(m["files"]) >= {"model.onnx", "scorer.npz", "defence.npz", "discriminator.pt", "report/metrics.json",
                               "report/eval/report.html", "report/eval/metrics.json"}  # fmt: skip
    html = (art.path / "report" / "eval" / "report.html").read_text()
    assert html.count("<img") >= 6
    assert len(m["data_fingerprint"]) == 64 and m["parent"] is None
    th = m["thresholds"]
    assert 0 < th["frame_prob"] < 1 and 0 < th["video_prob"] < 1 and np.isfinite(th["anomaly"])


def test_metrics_hold_per_epoch_curves_and_test_numbers_from_the_data(trained):
    metrics = json.loads((trained["models_dir"] / trained["version"] / "report" / "metrics.json").read_text())
    hist = metrics["history"]
    assert [h["epoch"] for h in hist] == list(range(1, 13))
    assert [h["phase"] for h in hist] == ["gan"] * 10 + ["adv"] * 2
    for h in hist:
        for k in ("clean_auc", "log_loss", "pgd_success", "pooled_detection_rate", "pooled_fpr_val", "val_s"):
            assert k in h and (h[k] is None or 0 <= h[k] <= 10), (k, h)
    # The curve scores what ships: the shipped defence, fitted on every 5th clean epoch (the fixture's
    # val_defence_every), the last clean one and every adversarial one, flags the epoch's PGD examples and a
    # share of clean validation crops near its 5% FPR.
    fitted = [h["epoch"] for h in hist if "defence_detection_rate" in h]
    assert fitted == [5, 10, 11, 12], fitted
    for h in hist:
        if h["epoch"] in fitted:
            assert 0 <= h["defence_detection_rate"] <= 1 and 0 <= h["defence_fpr_val"] <= 0.2 and h["defence_fit_s"] > 0, h
    # The adversarial phase trains at a positive radius, rising with the curriculum.
    assert 0 < hist[10]["train_eps"] <= hist[11]["train_eps"]
    adv, std = metrics["test"]["adversarially_trained"], metrics["test"]["standard"]
    assert set(adv["pgd"]) == {"1/255", "2/255", "4/255", "8/255"}
    for model in (adv, std):
        rates = [model["pgd"][k]["success_rate"] for k in ("1/255", "2/255", "4/255", "8/255")]
        assert all(0 <= r <= 1 for r in rates)
        assert rates[-1] >= rates[0]  # a larger radius is never weaker
    ood = metrics["test"]["ood_detection"]
    assert set(ood) >= {"non_face", "noise", "blur", "cartoon", "all"}
    # The OOD table scores what ships: flagged by the shipped defence or gated (quality gate + face check of
    # the crop detector); the pooled scorer's numbers stay beside it, labelled.
    assert ood["defence"] == metrics["config"]["defence"] and ood["face_check"] == "haar"
    for name in ("non_face", "noise", "blur", "cartoon"):
        row = ood["by_set"][name]
        assert ood[name] == row["flagged_or_gated_rate"]
        assert max(row["flagged_rate"], row["gated_rate"]) <= row["flagged_or_gated_rate"] <= row["flagged_rate"] + row["gated_rate"]
    assert ood["by_set"]["blur"]["gated_rate"] == 1.0  # heavy blur: the gate takes all of it
    assert ood["by_set"]["non_face"]["no_face_rate"] > 0.9  # Haar finds no face in natural-image patches
    assert ood["clean_gated_rate"] < 0.05 and set(ood["pooled_scorer_flagged"]) >= {"non_face", "all", "clean_test_fpr"}
    # Obvious swaps: even this short run separates REAL from FAKE on held-out videos.
    assert adv["clean_video_auc"] > 0.75, adv
    assert metrics["parity"]["max_abs_diff"] < 1e-4
    # Numbers come from the data: the test split's size matches the crops on disk.
    assert adv["frames"] == metrics["data"]["test_crops"]


def test_exported_model_and_scorer_agree_with_the_manifest(trained):
    art = Registry(trained["models_dir"]).load()
    net = OnnxDiscriminator(art.model_path)
    scorer = MahalanobisScorer.load(art.scorer_path)
    assert scorer.layer_names == tuple(net.feature_names)
    assert scorer.threshold == pytest.approx(art.manifest["thresholds"]["anomaly"])
    cfg = trained["config"]
    videos = read_dataset(cfg.data)
    crops = CropCache(cfg.cache_dir, CropConfig(size=64, frames_per_video=cfg.frames_per_video, detector=cfg.crop_detector)).load(videos[:4])
    out = net.run(crops.images)
    clean_flag_rate = float((scorer.score(out.features) > scorer.threshold).mean())
    assert clean_flag_rate < 0.5  # training crops are in distribution
    noise = np.random.default_rng(0).integers(0, 256, crops.images.shape, dtype=np.uint8)
    assert (scorer.score(net.run(noise).features) > scorer.threshold).mean() > 0.9
    # The torch weights saved beside the ONNX model are the same model.
    import torch

    from trainer.models import load_discriminator

    d = load_discriminator(art.path / "discriminator.pt")
    with torch.no_grad():
        logits, _ = d(torch.from_numpy(crops.images).permute(0, 3, 1, 2).float() / 255)
    assert np.abs(logits.numpy() - out.logits).max() < 1e-4


def test_resume_continues_from_the_last_checkpoint(trained, tmp_path):
    from trainer.train import TrainConfig, train

    cfg = trained["config"]
    run = tmp_path / "run"
    base = dict(data=cfg.data, frames_per_video=cfg.frames_per_video, batch_size=32, eval_subset=32,
                val_share=0.25, test_share=0.25, progress=False, run_dir=str(run), cache_dir=cfg.cache_dir,
                models_dir=str(tmp_path / "models"))  # fmt: skip
    train(TrainConfig(gan_epochs=1, adv_epochs=0, evaluate=False, **base))
    out = train(TrainConfig(gan_epochs=2, adv_epochs=0, resume=True, evaluate=False, **base))
    metrics = json.loads((tmp_path / "models" / out["version"] / "report" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]  # epoch 1 was not redone


@pytest.mark.slow
def test_two_process_ddp_training_on_cpu(small_dataset, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FORENSICS_STATE_DIR": str(tmp_path / "state"),
           "FORENSICS_MODELS_DIR": str(tmp_path / "models"), "FORENSICS_LOG_FORMAT": "json"}  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "forensics.cli", "train", "--data", str(small_dataset), "--frames", "4", "--gan-epochs", "1",
           "--adv-epochs", "1", "--batch-size", "16", "--threads", "1", "--no-progress", "--no-eval"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reg = Registry(tmp_path / "models")
    art = reg.load()
    metrics = json.loads((art.path / "report" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and len(metrics["history"]) == 2
    assert '"rank": 1' in proc.stderr  # the second process really trained
