"""Detect workers end to end: real Redis, real H.264 files, real ONNX Runtime, a trained model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from forensics.alerts import AlertWriter, make_alert
from forensics.config import load_settings
from forensics.provenance import SYNTHETIC_WARNING
from tests.conftest import SERVE_DETECTOR
from forensics.registry import Registry
from forensics.streams import Keys, backlog, ensure_group
from forensics.wire import FrameBatch, encode
from trainer.synth import render_sample_clip
from workers.detect import DetectWorker
from workers.ingest import FileIngest


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, str]:
    """3 REAL and 3 FAKE clips never seen in training (other seeds), with their labels."""
    d = tmp_path_factory.mktemp("samples")
    out = {}
    for i in range(6):
        fake = i % 2 == 1
        p = d / f"s{i}_{'fake' if fake else 'real'}.mp4"
        render_sample_clip(p, fake=fake, seed=500 + i, seconds=2.0, difficulty=0.0)
        out[str(p)] = "FAKE" if fake else "REAL"
    return out


@pytest.fixture
def dsettings(tmp_path, redis_url, prefix, trained):
    """Settings for the daemon on the trained model: face mode, fast reclaim for tests."""
    models = tmp_path / "models"
    shutil.copytree(trained["models_dir"], models, symlinks=True)
    return load_settings(
        state_dir=tmp_path / "state", models_dir=models, log_format="json",
        redis={"url": redis_url, "prefix": prefix},
        ingest={"watch_dir": tmp_path / "watch", "stable_seconds": 0.1, "poll_interval": 0.05, "frame_size": 64,
                "sample": "fps", "fps": 5.0, "batch_size": 4},
        detect={"claim_idle_ms": 500, "max_deliveries": 2, "block_ms": 100},
        faces={"detector": SERVE_DETECTOR},
        alerts={"scores": "full"},  # these tests compare published scores with thresholds and torch (parity)
    )  # fmt: skip


def _verdicts(r, prefix) -> list[dict]:
    return [json.loads(f[b"event"]) for _i, f in r.xrange(Keys(prefix).alerts) if b'"kind":"verdict"' in f[b"event"]]


def _run_threads(stop, *targets):
    threads = [threading.Thread(target=t, args=(stop,), daemon=True) for t in targets]
    for t in threads:
        t.start()
    return threads


def _wait(cond, timeout=60.0, poll=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(poll)
    return False


def test_dropped_files_get_exactly_one_verdict_each_with_mostly_right_labels(r, dsettings, samples):
    watch = Path(dsettings.ingest.watch_dir)
    watch.mkdir(parents=True)
    for p in samples:
        shutil.copy(p, watch / Path(p).name)
    ingest, worker = FileIngest(dsettings, r), DetectWorker(dsettings, r, consumer="w1")
    stop = threading.Event()
    threads = _run_threads(stop, ingest.run, worker.run)
    try:
        assert _wait(lambda: len(_verdicts(r, dsettings.redis.prefix)) >= 6, 120)
        time.sleep(0.5)  # would a duplicate show up?
    finally:
        stop.set()
        [t.join(20) for t in threads]
    verdicts = _verdicts(r, dsettings.redis.prefix)
    by_file = {v["file"]: v for v in verdicts}
    assert len(verdicts) == 6 and len(by_file) == 6
    right = sum(by_file[Path(p).name]["label"] == label for p, label in samples.items())
    assert right >= 4, {f: (v["label"], v["score"]) for f, v in by_file.items()}  # a 4-minute test model
    v = next(iter(by_file.values()))
    assert v["model"]["version"] == "v0001" and len(v["model"]["sha256"]) == 64
    assert v["faces_scored"] >= 8 and 0 <= v["anomaly_rate"] <= 1 and v["evidence"]["box"]
    # The evidence crop of every verdict is kept, as a 64x64 PNG.
    import cv2

    from forensics.alerts import evidence_field

    for v in verdicts:
        png = r.hget(Keys(dsettings.redis.prefix).evidence(v["source"]),
                     evidence_field(v["evidence"]["frame"], v["evidence"]["track"]))  # fmt: skip
        assert png is not None
        assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape == (64, 64, 3)
    # Results stream carries per-batch scores; the frames stream was acked and emptied.
    assert r.xlen(Keys(dsettings.redis.prefix).results) > 0
    assert backlog(r, Keys(dsettings.redis.prefix).frames) == 0


def test_file_without_faces_gets_a_no_faces_verdict(r, dsettings, tmp_path):
    from tests.media import write_test_video

    watch = Path(dsettings.ingest.watch_dir)
    watch.mkdir(parents=True)
    write_test_video(watch / "noface.mp4", frames=30, fps=15, width=320, height=240)
    FileIngest(dsettings, r).process(watch / "noface.mp4")
    worker = DetectWorker(dsettings, r, consumer="w1")
    worker.load_initial()
    worker.step_new()
    (v,) = _verdicts(r, dsettings.redis.prefix)
    assert v["label"] == "NO_FACES" and v["faces_scored"] == 0 and v["frames_sampled"] == 10


def _spawn_detect(settings, consumer: str) -> subprocess.Popen:
    env = {**os.environ, "FORENSICS_REDIS__URL": settings.redis.url, "FORENSICS_REDIS__PREFIX": settings.redis.prefix,
           "FORENSICS_MODELS_DIR": str(settings.models_dir), "FORENSICS_LOG_FORMAT": "json",
           "FORENSICS_DETECT__READ_COUNT": "1", "FORENSICS_DETECT__CLAIM_IDLE_MS": "500"}  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "forensics.cli", "detect", "--consumer", consumer], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def test_sigkilled_worker_pending_batches_are_reclaimed_and_every_file_gets_one_verdict(r, dsettings, samples):
    keys = Keys(dsettings.redis.prefix)
    watch = Path(dsettings.ingest.watch_dir)
    watch.mkdir(parents=True)
    dsettings.ingest.batch_size = 1  # many entries, so the victim surely holds some when killed
    ingest = FileIngest(dsettings, r)
    for p in samples:
        shutil.copy(p, watch / Path(p).name)
        ingest.process(watch / Path(p).name)
    total = r.xlen(keys.frames)
    victim = _spawn_detect(dsettings, "victim")
    try:
        assert _wait(lambda: any(c["name"] == b"victim" and c["pending"] > 0 for c in r.xinfo_consumers(keys.frames, "detect")), 60, 0.01)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    pending_at_kill = next(c["pending"] for c in r.xinfo_consumers(keys.frames, "detect") if c["name"] == b"victim")
    assert pending_at_kill > 0
    worker = DetectWorker(dsettings, r, consumer="rescuer")
    stop = threading.Event()
    threads = _run_threads(stop, worker.run)
    try:
        assert _wait(lambda: len(_verdicts(r, dsettings.redis.prefix)) >= 6, 120)
        time.sleep(1.0)
    finally:
        stop.set()
        [t.join(20) for t in threads]
    verdicts = _verdicts(r, dsettings.redis.prefix)
    assert sorted(v["file"] for v in verdicts) == sorted(Path(p).name for p in samples)
    assert backlog(r, keys.frames) == 0 and total > 20


def test_poison_message_is_dead_lettered_after_n_deliveries(r, dsettings):
    keys = Keys(dsettings.redis.prefix)
    ensure_group(r, keys.frames)
    poison_id = r.xadd(keys.frames, {"v": "1", "meta": "{not json", "data": b"\x00"})
    good = FrameBatch(source="f-1", seq=0, kind="eof", info={"file": "x.mp4", "batches": 0})
    r.xadd(keys.frames, encode(good))
    worker = DetectWorker(dsettings, r, consumer="w1")
    stop = threading.Event()
    threads = _run_threads(stop, worker.run)
    try:
        assert _wait(lambda: r.xlen(keys.dead) >= 1, 30)
    finally:
        stop.set()
        [t.join(20) for t in threads]
    (dead_id, dead), = r.xrange(keys.dead)
    assert dead[b"origin"].decode().endswith(poison_id.decode())
    assert b"not valid JSON" in dead[b"error"] and int(dead[b"deliveries"]) == 3
    assert backlog(r, keys.frames) == 0
    assert [v["label"] for v in _verdicts(r, dsettings.redis.prefix)] == ["NO_FACES"]  # the good one went through


def test_tampered_artifact_is_refused_on_reload_and_the_old_model_keeps_serving(r, dsettings):
    reg = Registry(dsettings.models_dir)
    shutil.copytree(reg.root / "v0001", reg.root / "v0002")
    m = json.loads((reg.root / "v0002" / "manifest.json").read_text())
    m["version"] = "v0002"
    (reg.root / "v0002" / "manifest.json").write_text(json.dumps(m))
    worker = DetectWorker(dsettings, r, consumer="w1")
    worker.load_initial()
    # A genuine new version is picked up between batches...
    r.set(Keys(dsettings.redis.prefix).model, json.dumps({"version": "v0002"}))
    assert worker.maybe_reload() and worker.model.artifact.version == "v0002"
    # ...a tampered one is refused and the old one keeps serving.
    shutil.copytree(reg.root / "v0001", reg.root / "v0003")
    onnx = reg.root / "v0003" / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-10] ^= 0x01
    onnx.write_bytes(bytes(data))
    r.set(Keys(dsettings.redis.prefix).model, json.dumps({"version": "v0003"}))
    assert not worker.maybe_reload()
    assert worker.model.artifact.version == "v0002"
    images = np.zeros((2, 64, 64, 3), np.uint8)
    assert worker.model.score(images).fake_prob.shape == (2,)


def test_scan_prints_verdicts_for_good_files_and_one_line_for_a_bad_one(dsettings, samples, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage" * 100)
    good = list(samples)[:2]
    env = {**os.environ, "FORENSICS_MODELS_DIR": str(dsettings.models_dir), "FORENSICS_LOG_FORMAT": "json",
           "FORENSICS_LOG_LEVEL": "warning"}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "forensics.cli", "scan", "--json", *good, str(bad)], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(v["path"]).name for v in lines] == [Path(p).name for p in good]
    assert all(v["label"] in ("REAL", "FAKE") and v["faces_scored"] > 0 for v in lines)
    # The test model learned synthetic faces only: scan says so in one line first (issue 15).
    version = Registry(dsettings.models_dir).current()
    assert proc.stderr.strip().splitlines() == [
        f"forensics: warning: {SYNTHETIC_WARNING.format(version=version)}",
        "forensics: error: bad.mp4: not a readable video (Invalid data found when processing input)"]  # fmt: skip


def test_alerts_tail_receives_published_alerts(r, dsettings):
    env = {**os.environ, "FORENSICS_REDIS__URL": dsettings.redis.url, "FORENSICS_REDIS__PREFIX": dsettings.redis.prefix,
           "FORENSICS_LOG_FORMAT": "json"}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "forensics.cli", "alerts", "tail", "--json", "--count", "2",
                             "--kind", "verdict", "--kind", "source"], env=env, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        time.sleep(2.0)  # tail starts from "now"
        w = AlertWriter(r, Keys(dsettings.redis.prefix))
        assert w.emit(make_alert("anomaly", "cam", "cam:anomaly:1", anomaly_rate=0.9))  # filtered out by --kind
        assert w.emit(make_alert("verdict", "f1", "f1:verdict", label="FAKE", score=0.9))
        assert not w.emit(make_alert("verdict", "f1", "f1:verdict", label="FAKE", score=0.9))  # deduplicated
        assert w.emit(make_alert("source", "cam", "cam:source:down:1", state="down"))
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["kind"], e["alert_id"]) for e in events] == [("verdict", "f1:verdict"), ("source", "cam:source:down:1")]


def test_live_source_raises_one_deepfake_alert_with_hysteresis(r, dsettings, trained):
    """Live batches whose crops score FAKE push the window over the threshold once; REAL ones re-arm it."""
    from forensics.model import load_model

    keys = Keys(dsettings.redis.prefix)
    ensure_group(r, keys.frames)
    dsettings.detect.window_s = 3.0  # 6-7 crops in the window at 2 crops per second
    worker = DetectWorker(dsettings, r, consumer="w1")
    worker.load_initial()
    crops = _scored_crops(trained, worker)
    fake, real = crops["fake"], crops["real"]
    now = time.time()
    seq = 0
    for phase, pool in (("fake", fake), ("real", real), ("fake", fake)):
        for k in range(8):
            img = pool[k % len(pool)][None]
            b = FrameBatch(source="cam1", seq=seq, source_kind="live", images=img, frame_index=[seq], pts=[seq / 2],
                           wall=[now + seq * 0.5], box=[[0, 0, 64, 64]], track=[0], frame_size=(320, 240))  # fmt: skip
            r.xadd(keys.frames, encode(b))
            seq += 1
            worker.step_new()
    alerts = [json.loads(f[b"event"]) for _i, f in r.xrange(keys.alerts)]
    deepfakes = [a for a in alerts if a["kind"] == "deepfake"]
    assert len(deepfakes) == 2, [(a["kind"], a.get("score")) for a in alerts]  # once per FAKE episode
    assert all(a["score"] > a["threshold"] for a in deepfakes)
    assert load_model  # imported for the fixture's model type


def _scored_crops(trained, worker) -> dict[str, np.ndarray]:
    """The crops the model scores highest (FAKE-looking) and lowest (REAL-looking)."""
    from trainer.data import CropCache, CropConfig, read_dataset

    cfg = trained["config"]
    videos = read_dataset(cfg.data)
    cs = CropCache(cfg.cache_dir, CropConfig(size=64, frames_per_video=cfg.frames_per_video, detector=cfg.crop_detector)).load(videos)
    p = worker.model.score(cs.images).fake_prob
    t, h = worker.model.video_threshold, worker.settings.detect.hysteresis
    order = np.argsort(p)
    low, high = order[:8], order[-8:]
    # Every window of these crops alone is past the hysteresis band on its side (the rule under test).
    assert p[high].min() > t + h and p[low].max() < t - h, (p[high], p[low], t)
    return {"fake": cs.images[high], "real": cs.images[low]}


def test_metrics_and_health_endpoints_report_the_worker(r, dsettings):
    import urllib.request

    from forensics import metrics as metrics_mod

    worker = DetectWorker(dsettings, r, consumer="w1")
    worker.load_initial()
    worker.metrics = metrics_mod.DetectMetrics()
    worker.metrics.set_model(worker.model.artifact.version)
    server = metrics_mod.serve(0, worker.metrics, lambda: {"model": worker.model.artifact.version, **worker.stats})
    try:
        ensure_group(r, Keys(dsettings.redis.prefix).frames)
        eof = FrameBatch(source="f-2", seq=0, kind="eof", info={"file": "y.mp4", "batches": 0})
        r.xadd(Keys(dsettings.redis.prefix).frames, encode(eof))
        worker.step_new()
        base = f"http://127.0.0.1:{server.server_port}"
        text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert 'forensics_detect_alerts_total{kind="verdict"} 1.0' in text
        assert 'forensics_detect_model_info{version="v0001"} 1.0' in text
        health = json.loads(urllib.request.urlopen(base + "/healthz", timeout=5).read())
        assert health["ok"] and health["model"] == "v0001" and health["alerts"] == 1
    finally:
        server.shutdown()


def test_explain_writes_a_saliency_figure_for_an_alert_from_its_evidence_crop(r, dsettings, samples, tmp_path,
                                                                               monkeypatch, capsys):  # fmt: skip
    from forensics.cli import main

    fake = next(p for p, label in samples.items() if label == "FAKE")
    watch = Path(dsettings.ingest.watch_dir)
    watch.mkdir(parents=True)
    shutil.copy(fake, watch / "f.mp4")
    FileIngest(dsettings, r).process(watch / "f.mp4")
    worker = DetectWorker(dsettings, r, consumer="w1")
    worker.load_initial()
    while worker.step_new():
        pass
    (v,) = _verdicts(r, dsettings.redis.prefix)
    for name, value in (("REDIS__URL", dsettings.redis.url), ("REDIS__PREFIX", dsettings.redis.prefix),
                        ("MODELS_DIR", str(dsettings.models_dir)), ("LOG_FORMAT", "json")):  # fmt: skip
        monkeypatch.setenv(f"FORENSICS_{name}", value)
    out = tmp_path / "why.png"
    capsys.readouterr()  # drop the workers' log lines
    assert main(["explain", v["alert_id"], "--out", str(out)]) == 0
    ex = json.loads(capsys.readouterr().out)
    assert out.stat().st_size > 5000 and ex["model"] == v["model"]["version"] == "v0001"
    # The torch model scores the same (losslessly kept) crop as the ONNX model in the worker did.
    assert abs(ex["fake_prob_torch"] - v["evidence"]["fake_prob"]) < 1e-4
    for regions in (ex["regions_input_gradient"], ex["regions_grad_cam"]):
        assert abs(sum(regions.values()) - 1) < 1e-6 and set(regions) == {"background", "upper_face", "lower_face"}
    # Unknown alert, expired crop: one line each, exit 2.
    assert main(["explain", "no-such-alert"]) == 2
    assert "no alert 'no-such-alert'" in capsys.readouterr().err
    r.delete(Keys(dsettings.redis.prefix).evidence(v["source"]))
    assert main(["explain", v["alert_id"], "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "has expired" in err and "\n" not in err
