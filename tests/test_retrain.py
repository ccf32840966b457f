"""Scheduled retraining: cron, lock, labels, poisoning screen, gate, promotion and hot reload.

Real redis-server, real synthetic DFDC data, real training (tiny), real detect worker threads.
The current model is the session's ``trained`` fixture (copied per test).
"""

from __future__ import annotations

import itertools
import json
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from forensics.alerts import AlertWriter, evidence_field, make_alert
from forensics.cli import main
from forensics.config import load_settings
from forensics.errors import ConfigError
from forensics.labels import labelled_crops, record_label
from forensics.lock import LockHeld, RedisLock
from forensics.registry import Registry
from forensics.streams import Keys, backlog, ensure_group
from forensics.wire import FrameBatch, encode
from tests.test_detect import _wait

UTC = timezone.utc
# The first test here that needs a model builds the session's `trained` fixture: ~2 min on an idle
# 2-core machine, several times that when the cores are shared, which the default 300 s does not cover.
pytestmark = pytest.mark.timeout(900)


# ---- cron and schedule ---------------------------------------------------------------------


@pytest.mark.parametrize("text, says", [
    ("0 3 * *", "has 4 fields, needs 5"), ("61 * * * *", "out of range"), ("0 3 * * xyz", "not acceptable"),
    ("*/0 * * * *", "step '0'"), ("0 0 30 2 *", "never matches"), ("0 3 * * * *", "has 6 fields, needs 5"),
])  # fmt: skip
def test_bad_cron_is_one_clear_config_error(text, says):
    with pytest.raises(ConfigError, match=says) as err:
        load_settings(retrain={"cron": text})
    assert "\n" not in str(err.value) and "retrain.cron" in str(err.value)


def test_schedule_uses_cron_or_interval_from_the_last_start():
    from forensics.config import RetrainSettings
    from trainer.schedule import next_run_at

    now = datetime(2026, 12, 5, 10, 7, 30, tzinfo=UTC).timestamp()
    assert next_run_at(RetrainSettings(interval_s=600), None, now) == now  # never ran: run now
    assert next_run_at(RetrainSettings(interval_s=600), now - 100, now) == now + 500
    cron = RetrainSettings(cron="0 3 * * *", interval_s=600)
    assert next_run_at(cron, now - 100, now) == datetime(2026, 12, 6, 3, 0, tzinfo=UTC).timestamp()


def test_refinement_moves_the_radius_one_bounded_step():
    from trainer.refine import next_eps

    kw = {"eps_min": 2 / 255, "eps_max": 8 / 255}
    assert next_eps(0.30, 0.05, 6 / 255, **kw)[0] == pytest.approx(7.5 / 255)
    assert next_eps(0.90, 0.05, 7.5 / 255, **kw)[0] == pytest.approx(8 / 255)  # capped
    assert next_eps(0.01, 0.05, 6 / 255, **kw)[0] == pytest.approx(5.4 / 255)
    eps, why = next_eps(0.06, 0.05, 6 / 255, **kw)
    assert eps == pytest.approx(6 / 255) and "unchanged" in why


# ---- lock --------------------------------------------------------------------------------


def test_lock_is_exclusive_renewed_past_its_ttl_and_a_lost_lock_is_noticed(r, prefix):
    key = f"{prefix}:retrain:lock"
    a = RedisLock(r, key, ttl_s=1.5)
    a.acquire()
    try:
        with pytest.raises(LockHeld, match="is held by .* pid"):
            RedisLock(r, key, ttl_s=1.0).acquire()
        time.sleep(3.5)  # over 2 TTLs: only renewal keeps it
        a.check()
        assert 0 < r.pttl(key) <= 1500
        r.set(key, "someone else")  # taken over (e.g. after a long stall)
        with pytest.raises(Exception, match="was lost"):
            a.check()
    finally:
        a.release()
    assert r.get(key) == b"someone else"  # release never deletes another holder's lock
    r.delete(key)
    # A dead holder (no renewal) frees the lock after its TTL.
    r.set(key, "dead holder", px=300)
    time.sleep(0.5)
    with RedisLock(r, key, ttl_s=1.0):
        pass


# ---- data for the retraining tests ---------------------------------------------------------


@pytest.fixture(scope="module")
def intake(tmp_path_factory) -> dict[str, Path]:
    """New clean clips (other seed), and a batch with every label flipped (the poison)."""
    from trainer.synth import generate_dataset

    root = tmp_path_factory.mktemp("intake")
    clean = generate_dataset(root / "clean", 12, seed=77, seconds=1.4, difficulty=0.0)
    # 20 flipped clips, not 10: the session model misreads about a third of clean clips, and against
    # that rate a batch of 10 flips is at the edge of the source test's power (binomial p near alpha),
    # so whether it was caught hung on one validation video of the 12 (measured on two models trained
    # on byte-identical data by the wave-1 and the current trainer: 100% and 30% of 10 flips caught;
    # with 20 flips, 100% for both).
    flipped = generate_dataset(root / "flipped", 20, seed=78, seconds=1.4, difficulty=0.0)
    for meta in Path(flipped).rglob("metadata.json"):
        entries = json.loads(meta.read_text())
        for e in entries.values():
            e["label"] = "REAL" if e["label"] == "FAKE" else "FAKE"
            e.pop("original", None)
        meta.write_text(json.dumps(entries))
    return {"clean": Path(clean), "flipped": Path(flipped)}


@pytest.fixture
def rsettings(tmp_path, redis_url, prefix, trained, intake):
    """The trained model as current, the clean intake folder, a tiny candidate recipe (1 epoch, warm start)."""
    models = tmp_path / "models"
    shutil.copytree(trained["models_dir"], models, symlinks=True)
    return load_settings(
        state_dir=tmp_path / "state", models_dir=models, log_format="json",
        redis={"url": redis_url, "prefix": prefix},
        detect={"block_ms": 50, "max_batch": 16},
        retrain={"data_dirs": [intake["clean"]], "cache_dir": trained["config"].cache_dir, "gan_epochs": 0,
                 "adv_epochs": 1, "threads": 1, "lock_ttl_s": 10, "gate_max_fakes": 24, "max_new_share": 1.0,
                 "max_source_share": 1.0, "refine": True},
    )  # fmt: skip


def _config_file(settings, path: Path) -> Path:
    path.write_text(
        f'models_dir = "{settings.models_dir}"\nstate_dir = "{settings.state_dir}"\nlog_format = "json"\n'
        f'[redis]\nurl = "{settings.redis.url}"\nprefix = "{settings.redis.prefix}"\n'
    )
    return path


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()


def _alert_with_crop(r, keys, alert_id: str, source: str, crop: np.ndarray | None, frame: int = 0) -> None:
    """An anomaly alert as a detect worker writes it, with its evidence crop (unless None: expired)."""
    AlertWriter(r, keys).emit(make_alert("anomaly", source, alert_id, model={"version": "v0001", "sha256": "x"},
                                         anomaly_rate=0.9, evidence={"frame": frame, "track": 0, "fake_prob": 0.5}))  # fmt: skip
    if crop is not None:
        r.hset(keys.evidence(source), evidence_field(frame, 0), _png(crop))


# ---- labels ------------------------------------------------------------------------------


def test_label_records_who_when_and_keeps_the_crop_or_says_it_expired(r, rsettings, tmp_path, capsys):
    keys = Keys(rsettings.redis.prefix)
    crop = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    _alert_with_crop(r, keys, "cam1:anomaly:7", "cam1", crop, frame=7)
    _alert_with_crop(r, keys, "cam2:anomaly:3", "cam2", None, frame=3)
    cfg = _config_file(rsettings, tmp_path / "f.toml")

    assert main(["--config", str(cfg), "label", "cam1:anomaly:7", "fake", "--by", "ana"]) == 0
    assert "labelled fake by ana (anomaly on cam1); 1 crop(s) kept" in capsys.readouterr().out
    assert main(["--config", str(cfg), "label", "cam2:anomaly:3", "real"]) == 0
    assert "expired" in capsys.readouterr().out
    assert main(["--config", str(cfg), "label", "nope:1", "real"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("forensics: error: no alert 'nope:1'") and "\n" not in err

    r.delete(keys.evidence("cam1"))  # the detect worker's evidence expires; the label's copy stays
    got = {lc.record["alert_id"]: lc for lc in labelled_crops(r, keys, 64)}
    rec = got["cam1:anomaly:7"].record
    assert (rec["label"], rec["by"], rec["source"], rec["model"]["version"]) == ("fake", "ana", "cam1", "v0001")
    assert abs(rec["at"] - time.time()) < 60
    assert np.array_equal(got["cam1:anomaly:7"].images[0], crop)
    assert got["cam2:anomaly:3"].images is None and "expired" in got["cam2:anomaly:3"].problem
    assert 0 < r.ttl(f"{keys.prefix}:labels:crops:cam1:anomaly:7") <= rsettings.retrain.label_crop_ttl_s


# ---- poisoning screen ----------------------------------------------------------------------


def test_poisoned_batch_is_mostly_quarantined_while_clean_new_data_is_kept(r, rsettings, intake, trained):
    """Flipped labels (a folder) and out-of-distribution crops (labelled alerts) against clean new clips."""
    from forensics.model import load_model
    from trainer.data import CropCache, CropConfig, read_dataset, split_by_group
    from trainer.ood import cartoon_faces, non_face_patches
    from trainer.poisoning import Sample, calibrate, screen
    from trainer.retrain import _folder_samples, _label_samples

    cfg = trained["config"]
    model = load_model(Registry(rsettings.models_dir))
    cache = CropCache(cfg.cache_dir, CropConfig(size=64, frames_per_video=cfg.frames_per_video, detector=cfg.crop_detector))
    splits = split_by_group(read_dataset(cfg.data), val=cfg.val_share, test=cfg.test_share, seed=cfg.seed)
    val = cache.load(splits["val"])
    cal = calibrate(model, val.images, val.labels, val.video, outlier_quantile=0.995, flip_quantile=0.95)

    clean, _ = _folder_samples([intake["clean"]], cache, set())
    flipped, _ = _folder_samples([intake["flipped"]], cache, set())
    keys = Keys(rsettings.redis.prefix)
    ood = np.concatenate([non_face_patches(6, 64, seed=3), cartoon_faces(6, 64, seed=4)])
    for i, img in enumerate(ood):  # an attacker labelling odd crops, half of each label
        _alert_with_crop(r, keys, f"cam9:anomaly:{i}", "cam9", img, frame=i)
        record_label(r, keys, f"cam9:anomaly:{i}", "fake" if i % 2 else "real", by="mallory")
    ood_samples, counts = _label_samples(r, keys, 64)
    assert counts["usable"] == len(ood) == len(ood_samples)
    assert all(isinstance(s, Sample) for s in clean + flipped)

    result = screen(model, cal, clean + flipped + ood_samples, base_crops=240, max_new_share=10, max_source_share=10)
    out = {q["id"] for q in result.quarantined}
    kept_clean = np.mean([s.id not in out for s in clean])
    caught_flip = np.mean([s.id in out for s in flipped])
    caught_ood = np.mean([s.id in out for s in ood_samples])
    caught_poison = np.mean([s.id in out for s in flipped + ood_samples])
    print(json.dumps({"clean": len(clean), "flipped": len(flipped), "ood": len(ood_samples),
                      "kept_clean": kept_clean, "caught_flip": caught_flip, "caught_ood": caught_ood,
                      "caught_poison": caught_poison, "calibration": cal.to_json()}))  # fmt: skip
    assert caught_poison >= 0.7 and caught_ood >= 0.8 and caught_flip >= 0.5
    assert kept_clean >= 0.75
    row = next(q for q in result.quarantined)
    assert {"id", "reason", "median_anomaly", "outlier_threshold", "mean_fake_prob", "median_margin_to_other_class"} <= set(row)


def test_caps_limit_what_one_run_adds_in_total_and_per_source(rsettings):
    from forensics.model import load_model
    from trainer.poisoning import Calibration, Sample, screen

    model = load_model(Registry(rsettings.models_dir))
    # Nothing is quarantined under these thresholds: only the caps act.
    lenient = Calibration(outlier_threshold=np.inf, flip_threshold=np.inf, video_threshold=0.5,
                          layer_margin_std=[1.0] * len(model.scorer.weights), disagree_rate_video=1.0,
                          disagree_rate_crop=1.0, val_crops=0)  # fmt: skip
    img = np.zeros((10, 64, 64, 3), np.uint8)
    samples = [Sample(f"a{i}", "A", 0, img) for i in range(6)] + [Sample(f"b{i}", "B", 0, img) for i in range(6)]
    res = screen(model, lenient, samples, base_crops=200, max_new_share=0.5, max_source_share=0.2)
    per = {src: sum(s.source == src for s in res.accepted) for src in "AB"}
    assert per == {"A": 4, "B": 4}  # 0.2 * 200 = 40 crops per source, 100 in total
    assert len(res.capped) == 4 and all(c["reason"] == "per-source cap" for c in res.capped)
    res = screen(model, lenient, samples, base_crops=100, max_new_share=0.5, max_source_share=1.0)
    assert sum(len(s.images) for s in res.accepted) == 50 and res.counts()["capped"] == 7


# ---- the run: lock, gate, promotion, hot reload, rollback -----------------------------------------


def test_a_held_lock_stops_a_second_run_with_one_line(r, rsettings, tmp_path, capsys):
    from trainer.retrain import run_retrain

    keys = Keys(rsettings.redis.prefix)
    with RedisLock(r, keys.retrain_lock, ttl_s=30):
        with pytest.raises(LockHeld):
            run_retrain(rsettings, r)
        assert main(["--config", str(_config_file(rsettings, tmp_path / "f.toml")), "retrain", "--now"]) == 2
    err = capsys.readouterr().err.strip()
    assert "another retraining is running" in err and "\n" not in err
    assert Registry(rsettings.models_dir).run_records() == [] and Registry(rsettings.models_dir).versions() == ["v0001"]


def test_a_lost_lock_aborts_the_run_before_training(r, rsettings):
    from trainer.retrain import run_retrain

    key = Keys(rsettings.redis.prefix).retrain_lock
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(run_retrain(rsettings, r)))
    t.start()
    assert _wait(lambda: r.exists(key), 30, 0.005)
    r.set(key, "another machine")  # as if our lock had expired during a stall and been taken
    t.join(120)
    assert out["decision"] == "aborted" and "was lost" in out["reason"] and out["candidate"] is None
    assert Registry(rsettings.models_dir).versions() == ["v0001"]


@pytest.mark.slow
def test_a_worse_candidate_is_kept_unpromoted_with_the_reason(r, rsettings, capsys):
    """An untrained candidate (0 epochs, no warm start) against the current model, default gate."""
    from trainer.retrain import run_retrain

    rec = run_retrain(rsettings, r, train_overrides={"gan_epochs": 0, "adv_epochs": 0, "warm_start": False})
    print(json.dumps({k: rec[k] for k in ("decision", "reason")} | {m: rec["gate"][m] for m in ("current", "candidate")}))
    reg = Registry(rsettings.models_dir)
    assert rec["decision"] == "kept" and rec["reason"].startswith("not promoted: clean frame AUC")
    assert rec["candidate"] == "v0002" and reg.current() == "v0001"
    assert r.get(Keys(rsettings.redis.prefix).model) is None  # nothing announced
    g = rec["gate"]
    assert g["candidate"]["clean_frame_auc"] < g["current"]["clean_frame_auc"] - rsettings.retrain.auc_margin
    assert g["holdout"]["crops"] > 0 and g["holdout"]["kind"] == "current model's test split"
    assert g["holdout"]["changed"] is False  # first use: stored in models/holdout.json
    assert json.loads((Path(rsettings.models_dir) / "holdout.json").read_text())["fingerprint"] == g["holdout"]["fingerprint"]
    assert rec["intake"]["folders"]["videos"] == 12 and rec["screen"]["samples_in"] == 12
    assert reg.load("v0002").manifest["parent"] == "v0001"
    row = next(row for row in reg.describe() if row["version"] == "v0002")
    assert row["decisions"][0]["decision"] == "kept" and not row["current"]


def _frames(trained) -> np.ndarray:
    from trainer.data import CropCache, CropConfig, read_dataset

    cfg = trained["config"]
    cs = CropCache(cfg.cache_dir, CropConfig(size=64, frames_per_video=cfg.frames_per_video, detector=cfg.crop_detector)).load(read_dataset(cfg.data))
    return cs.images[:: max(1, len(cs) // 32)][:32]


@pytest.mark.slow
def test_scheduled_run_promotes_and_a_running_worker_switches_without_dropping_a_batch_then_rolls_back(
    r, rsettings, trained, tmp_path, capsys
):
    """Scheduler -> candidate -> gate -> announce; a detect worker thread scores frames throughout.

    The gate is opened wide here (its rule is checked by the worse-candidate test): this test is
    about the path from a passing candidate to every worker serving it, and back by rollback.
    """
    from trainer.schedule import Scheduler
    from workers.detect import DetectWorker

    rsettings.retrain.auc_margin = 1.0
    rsettings.retrain.asr_tolerance = 1.0
    rsettings.retrain.interval_s = 2.0
    keys = Keys(rsettings.redis.prefix)
    ensure_group(r, keys.frames)
    worker = DetectWorker(rsettings, r, consumer="w1")
    worker.load_initial()
    stop, producing = threading.Event(), threading.Event()
    producing.set()
    images = _frames(trained)
    sent = []

    def produce(stop_):
        seq = 0
        while producing.is_set():
            img = images[seq % len(images)][None]
            b = FrameBatch(source="cam1", seq=seq, source_kind="live", images=img, frame_index=[seq], pts=[seq / 4],
                           wall=[time.time()], box=[[0, 0, 64, 64]], track=[0], frame_size=(64, 64))  # fmt: skip
            r.xadd(keys.frames, encode(b))
            sent.append(seq)
            seq += 1
            time.sleep(0.1)

    threads = [threading.Thread(target=worker.run, args=(stop,), daemon=True),
               threading.Thread(target=produce, args=(stop,), daemon=True)]  # fmt: skip
    for t in threads:
        t.start()
    sched = Scheduler(rsettings, r)
    r.set(f"{keys.prefix}:retrain:last", json.dumps({"run_id": "earlier", "started_at": time.time()}))
    t0 = time.time()
    sched.run(threading.Event(), max_runs=1)
    rec = sched.records[0]
    assert rec["trigger"] == "schedule" and rec["started_at"] >= t0 + 1.9  # waited for the interval
    assert rec["decision"] == "promoted", rec.get("reason")
    announced = json.loads(r.get(keys.model))
    assert announced["version"] == rec["candidate"] == "v0002" and announced["previous"] == "v0001"
    assert _wait(lambda: worker.model.artifact.version == "v0002", 30)
    ref = rec["refinement"]  # the detector's rate on the new data sets the next run's radius
    assert 0 <= ref["anomaly_rate_new"] <= 1 and ref["eps_used"] == pytest.approx(6 / 255)
    assert json.loads(r.get(f"{keys.prefix}:retrain:refine"))["eps"] == ref["eps_next"]

    cfg = _config_file(rsettings, tmp_path / "f.toml")
    time.sleep(1.0)
    assert main(["--config", str(cfg), "models", "rollback"]) == 0
    assert "current -> v0001 (announced" in capsys.readouterr().out
    assert json.loads(r.get(keys.model))["version"] == "v0001"
    assert _wait(lambda: worker.model.artifact.version == "v0001", 30)
    time.sleep(1.0)
    producing.clear()
    threads[1].join(10)
    assert _wait(lambda: backlog(r, keys.frames) == 0, 30)
    stop.set()
    threads[0].join(10)

    results = [json.loads(f[b"event"]) for _i, f in r.xrange(keys.results)]
    assert sorted(e["seq"] for e in results) == sent  # every batch scored exactly once, none dropped
    versions = [e["model"]["version"] for e in sorted(results, key=lambda e: e["seq"])]
    switches = [(a, b) for a, b in itertools.pairwise(versions) if a != b]
    assert switches == [("v0001", "v0002"), ("v0002", "v0001")], switches
    assert worker.stats["reloads"] == 2 and r.xlen(keys.dead) == 0

    assert main(["--config", str(cfg), "models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "parent=v0001" in listing and f"retrain {rec['run_id']}: promoted" in listing
    assert "rollback from v0002" in listing


def test_gate_refuses_a_candidate_that_newly_fails_a_gradient_masking_check():
    from trainer.gate import decide

    current = {"clean_frame_auc": 0.80, "attack_success_rate": 0.40, "sanity_failed": []}
    # Better on paper (higher AUC, far lower attack success), but its input gradients are zero.
    masked = {"clean_frame_auc": 0.82, "attack_success_rate": 0.05,
              "sanity_failed": ["share of zero input gradients ~0", "unbounded PGD reaches >= 95%"]}  # fmt: skip
    ok, reason = decide(current, masked, auc_margin=0.01, asr_tolerance=0.02)
    assert not ok and "gradient masking" in reason and "zero input gradients" in reason
    # The same numbers without the failed checks pass; a failure both models share does not block.
    assert decide(current, {**masked, "sanity_failed": []}, auc_margin=0.01, asr_tolerance=0.02)[0]
    shared = ["share of zero input gradients ~0"]
    assert decide({**current, "sanity_failed": shared}, {**masked, "sanity_failed": shared},
                  auc_margin=0.01, asr_tolerance=0.02)[0]  # fmt: skip
