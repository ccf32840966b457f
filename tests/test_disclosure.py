"""alerts.scores (full | rounded | label) on every output path: alerts, results stream, scan (in
process and the CLI). Real redis-server, the real detect worker on a trained model, real ONNX Runtime."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from forensics.config import load_settings
from tests.conftest import SERVE_DETECTOR
from forensics.disclosure import RESULT_FIELDS, RESULT_FIELDS_LABEL, disclose
from forensics.streams import Keys, ensure_group
from forensics.wire import FrameBatch, encode
from trainer.synth import render_sample_clip
from workers.detect import DetectWorker

VOLATILE = {"created_at", "created_ts", "scored_at", "scores"}
PROB = {"score", "fake_prob"}
RATE = {"anomaly_rate", "low_quality_rate"}
ANOMALY = {"mahalanobis", "anomaly_mean"}


def test_disclose_changes_only_score_fields_and_says_which_policy():
    v = {"label": "FAKE", "score": 0.123456789, "threshold": 0.4321987, "faces_scored": 7, "anomaly_rate": 2 / 7,
         "tracks": {"0": {"faces": 7, "score": 0.98765, "anomaly_mean": 123.4567, "anomalous": True}},
         "evidence": {"frame": 3, "box": [1, 2, 3, 4], "fake_prob": 0.99999, "mahalanobis": 87.65432, "anomalous": False}}  # fmt: skip
    before = json.dumps(v, sort_keys=True)
    full, rounded, label = (disclose(v, p, 2) for p in ("full", "rounded", "label"))
    assert json.dumps(v, sort_keys=True) == before  # input untouched
    assert {k: x for k, x in full.items() if k != "scores"} == v and full["scores"] == "full"
    assert rounded["scores"] == "rounded:2" and label["scores"] == "label"
    assert (rounded["score"], rounded["anomaly_rate"], rounded["tracks"]["0"]["score"]) == (0.12, 0.29, 0.99)
    assert rounded["evidence"]["fake_prob"] == 1.0 and rounded["evidence"]["mahalanobis"] == 87.7
    assert rounded["tracks"]["0"]["anomaly_mean"] == 123.0
    assert (
        label["score"] is None
        and label["evidence"]["fake_prob"] is None
        and label["evidence"]["mahalanobis"] is None
    )
    assert label["tracks"]["0"]["score"] is None and label["anomaly_rate"] == 0.29
    for out in (rounded, label):  # thresholds, labels, counts, boxes never change
        assert out["threshold"] == v["threshold"] and out["label"] == "FAKE" and out["faces_scored"] == 7
        assert out["evidence"]["box"] == [1, 2, 3, 4] and out["tracks"]["0"]["anomalous"] is True
    with pytest.raises(ValueError, match="unknown score policy"):
        disclose(v, "exact")


def test_alert_lines_print_without_scores_under_label():
    from forensics.alerts import make_alert
    from forensics.cli import format_alert

    for kind in ("verdict", "deepfake", "anomaly"):
        alert = make_alert(
            kind, "cam", f"cam:{kind}:1", score=0.9, threshold=0.5, anomaly_rate=0.25, label="FAKE"
        )
        line = format_alert(disclose(alert, "label"))
        assert line.startswith(f"[{kind}] ") and "0.9" not in line


def _compare(full, other, policy: str, decimals: int, frame_threshold: float, path: str = "") -> int:
    """Assert ``other`` is ``full`` under ``policy``; returns how many score values were checked."""
    if isinstance(full, dict):
        assert isinstance(other, dict) and set(full) == set(other), path
        n = 0
        for k in full:
            if k in VOLATILE:
                continue
            if k == "crops" and full.get("fields") == RESULT_FIELDS:
                n += _compare_crops(full[k], other[k], policy, decimals, frame_threshold)
            elif k == "fields" and policy == "label":
                assert other[k] == RESULT_FIELDS_LABEL
            elif k in PROB | RATE | ANOMALY and isinstance(full[k], float):
                n += 1
                _check_value(k, full[k], other[k], policy, decimals)
            else:
                n += _compare(full[k], other[k], policy, decimals, frame_threshold, f"{path}.{k}")
        return n
    if isinstance(full, list):
        assert isinstance(other, list) and len(full) == len(other), path
        return sum(_compare(a, b, policy, decimals, frame_threshold, path) for a, b in zip(full, other))
    assert full == other, path  # everything that is not a score is identical
    return 0


def _check_value(key: str, full: float, got, policy: str, decimals: int) -> None:
    if policy == "label" and key not in RATE:
        assert got is None, key
    elif key in ANOMALY:
        assert got == float(f"{full:.{decimals + 1}g}"), (key, full, got)
    else:
        assert got == round(full, decimals), (key, full, got)


def _compare_crops(full: list, other: list, policy: str, decimals: int, thr: float) -> int:
    for a, b in zip(full, other, strict=True):
        assert a[:3] == b[:3] and a[5:] == b[5:]
        if policy == "label":
            assert b[3] == int(a[3] > thr) and b[4] is None
        else:
            assert b[3] == round(a[3], decimals) and b[4] == float(f"{a[4]:.{decimals + 1}g}")
    return 2 * len(full)


@pytest.fixture
def psettings(tmp_path, redis_url, prefix, trained):
    models = tmp_path / "models"
    shutil.copytree(trained["models_dir"], models, symlinks=True)

    def make(policy: str, decimals: int = 2):
        return load_settings(
            state_dir=tmp_path / "state", models_dir=models, log_format="json", log_level="warning",
            redis={"url": redis_url, "prefix": f"{prefix}{policy}"},
            ingest={"frame_size": 64, "sample": "fps", "fps": 5.0, "batch_size": 4},
            detect={"block_ms": 50, "anomaly_rate": 0.01, "window_s": 3.0},
            alerts={"scores": policy, "score_decimals": decimals}, faces={"detector": SERVE_DETECTOR},
        )  # fmt: skip

    return make


def _crops(trained) -> tuple[np.ndarray, np.ndarray]:
    """Training crops and uniform noise crops (the noise is far outside the clean distribution)."""
    from trainer.data import CropCache, CropConfig, read_dataset

    cfg = trained["config"]
    cs = CropCache(cfg.cache_dir, CropConfig(size=64, frames_per_video=cfg.frames_per_video, detector=cfg.crop_detector)).load(
        read_dataset(cfg.data)
    )
    # The 8 FAKE crops the model finds most fake-looking, so the live window surely crosses its threshold.
    from forensics.model import load_model
    from forensics.registry import Registry

    fake_imgs = cs.images[cs.labels == 1]
    p = load_model(Registry(trained["models_dir"]), trained["version"]).score(fake_imgs).fake_prob
    fakes = fake_imgs[np.argsort(p)[-8:][::-1]]
    noise = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    return fakes, noise


def _publish_all(settings, r, fakes, noise) -> tuple[list[dict], list[dict], float]:
    """A file source (2 batches + eof) and a live source (8 batches) through a real detect worker."""
    keys = Keys(settings.redis.prefix)
    ensure_group(r, keys.frames)
    worker = DetectWorker(settings, r, consumer="w1")
    worker.load_initial()
    file_imgs = np.concatenate([fakes[:4], noise])
    for seq in range(2):
        imgs = file_imgs[seq * 4 : seq * 4 + 4]
        b = FrameBatch(source="f1", seq=seq, source_kind="file", images=imgs, frame_index=[seq * 4 + i for i in range(4)],
                       pts=[seq + i / 4 for i in range(4)], wall=[1000.0 + seq] * 4, box=[[0, 0, 64, 64]] * 4,
                       track=[0, 0, 1, 1], frame_size=(320, 240))  # fmt: skip
        r.xadd(keys.frames, encode(b))
    r.xadd(keys.frames, encode(FrameBatch(source="f1", seq=2, source_kind="file", kind="eof",
                                          info={"file": "f1.mp4", "batches": 2, "frames_decoded": 8, "frames_sampled": 8})))  # fmt: skip
    now = 2000.0
    live = np.concatenate(
        [fakes[:8], noise[:3]]
    )  # FAKE crops raise a deepfake alert, then noise an anomaly alert
    for seq in range(len(live)):
        b = FrameBatch(source="cam1", seq=seq, source_kind="live", images=live[seq][None], frame_index=[seq],
                       pts=[seq / 2], wall=[now + seq * 0.5], box=[[0, 0, 64, 64]], track=[0], frame_size=(320, 240))  # fmt: skip
        r.xadd(keys.frames, encode(b))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and worker.step_new():
        pass
    alerts = sorted((json.loads(f[b"event"]) for _i, f in r.xrange(keys.alerts)), key=lambda a: a["alert_id"])
    results = [json.loads(f[b"event"]) for _i, f in r.xrange(keys.results)]
    return alerts, results, worker.model.frame_threshold


@pytest.mark.slow
def test_every_output_path_follows_the_score_policy_and_nothing_else_changes(r, psettings, trained, tmp_path):
    from forensics.model import load_model
    from forensics.registry import Registry
    from forensics.scan import scan_file

    fakes, noise = _crops(trained)
    clip = tmp_path / "clip.mp4"
    render_sample_clip(clip, fake=True, seed=901, seconds=1.5, difficulty=0.0)
    out = {}
    for policy in ("full", "rounded", "label"):
        s = psettings(policy)
        alerts, results, thr = _publish_all(s, r, fakes, noise)
        model = load_model(Registry(s.models_dir))
        out[policy] = {"alerts": alerts, "results": results, "scan": scan_file(clip, s, model),
                       "scan_full": scan_file(clip, s, model, full_scores=True)}  # fmt: skip
    full = out["full"]
    kinds = sorted(a["kind"] for a in full["alerts"])
    assert kinds == ["anomaly", "anomaly", "deepfake", "verdict"], (
        kinds
    )  # every alert kind that carries a score
    assert len(full["results"]) == 13 and full["scan"]["faces_scored"] > 0
    assert all(a["scores"] == "full" for a in full["alerts"] + full["results"])
    # full precision really is full: some published value has more than 2 decimals
    assert any(len(repr(row[3]).split(".")[-1]) > 2 for e in full["results"] for row in e["crops"])
    for policy in ("rounded", "label"):
        got = out[policy]
        n = _compare(full["alerts"], got["alerts"], policy, 2, thr)
        n += _compare(full["results"], got["results"], policy, 2, thr)
        n += _compare(full["scan"], got["scan"], policy, 2, thr)
        assert n > 50, n  # scores were actually checked on every path
        assert all(
            a["scores"] == ("rounded:2" if policy == "rounded" else "label")
            for a in got["alerts"] + got["results"]
        )
        assert got["scan_full"] == {**full["scan_full"]} and got["scan_full"]["scores"] == "full"
        assert [a["label"] for a in got["alerts"] if a["kind"] == "verdict"] == \
            [a["label"] for a in full["alerts"] if a["kind"] == "verdict"]  # fmt: skip
    assert math.isclose(full["scan_full"]["score"], full["scan"]["score"])


def test_scan_cli_honours_the_setting_and_full_scores_flag(psettings, tmp_path):
    s = psettings("label")
    clip = tmp_path / "clip.mp4"
    render_sample_clip(clip, fake=False, seed=902, seconds=1.0, difficulty=0.0)
    env = {**os.environ, "FORENSICS_MODELS_DIR": str(s.models_dir), "FORENSICS_LOG_LEVEL": "warning",
           "FORENSICS_ALERTS__SCORES": "label"}  # fmt: skip
    outs = []
    for extra in ([], ["--full-scores"]):
        proc = subprocess.run([sys.executable, "-m", "forensics.cli", "scan", "--json", *extra, str(clip)], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        outs.append(json.loads(proc.stdout))
    label, full = outs
    assert label["scores"] == "label" and label["score"] is None and label["evidence"]["fake_prob"] is None
    assert full["scores"] == "full" and isinstance(full["score"], float) and label["label"] == full["label"]
    assert label["faces_scored"] == full["faces_scored"] > 0
