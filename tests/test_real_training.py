"""Training for real video (issue 15) on generated data: the multi-part reader with cross-part originals and
skip reasons, 1080p / portrait / mpeg4 / yuv444p clips, --real-only training on REAL clips with self-blended
fakes, manifest provenance, the synthetic-only warning in scan, at detect start-up and on alerts, a 256 px
round trip, cross-dataset test parts (--test-data) and the wall-time cap (--max-minutes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from skimage import data as skdata

from forensics.registry import Registry
from trainer.data import CropCache, CropConfig, group_key, read_dataset, split_by_group
from trainer.sources import skip_reasons

FACE = skdata.astronaut()[0:300, 100:380]  # her head and shoulders


def face_frame(i: int, w: int, h: int) -> np.ndarray:
    side = min(w, h) * 3 // 5
    face = cv2.resize(FACE, (side, side * FACE.shape[0] // FACE.shape[1]))
    img = np.full((h, w, 3), (70, 100, 130), np.uint8)
    x, y = (w - face.shape[1]) // 2 + 2 * i, (h - face.shape[0]) // 2
    img[y : y + face.shape[0], x : x + face.shape[1]] = face
    return img


def encode(path: Path, *, width: int, height: int, codec: str = "libx264", pix_fmt: str = "yuv420p",
           seconds: float = 1.0, fps: int = 10, frame_fn=face_frame) -> Path:  # fmt: skip
    with av.open(str(path), "w") as out:
        options = {"x264-params": "mbtree=0", "preset": "veryfast"} if codec == "libx264" else {}
        stream = out.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = Fraction(1, fps)
        for i in range(int(seconds * fps)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_fn(i, width, height), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_part(part: Path, entries: dict[str, dict]) -> None:
    part.mkdir(parents=True, exist_ok=True)
    (part / "metadata.json").write_text(json.dumps(entries))


def test_parts_with_cross_part_originals_odd_formats_and_skipped_videos(tmp_path):
    a, b = tmp_path / "part_a", tmp_path / "part_b"
    write_part(a, {"orig.mp4": {"label": "REAL"}, "broken.mp4": {"label": "REAL"}, "empty.mp4": {"label": "REAL"}})
    write_part(b, {"swap_1080p.mp4": {"label": "FAKE", "original": "orig.mp4"},
                   "swap_portrait.mp4": {"label": "FAKE", "original": "orig.mp4"},
                   "lost.mp4": {"label": "FAKE", "original": "gone.mp4"},  # original in no part
                   "orig_segment_2.mp4": {"label": "REAL"}})  # fmt: skip
    encode(a / "orig.mp4", width=640, height=480, pix_fmt="yuv444p")  # H.264 4:4:4
    encode(b / "swap_1080p.mp4", width=1920, height=1080)  # H.264 1080p, 1 s
    encode(b / "swap_portrait.mp4", width=480, height=848, codec="mpeg4")  # MPEG-4 part 2, portrait
    encode(b / "lost.mp4", width=320, height=240, seconds=0.5)
    encode(b / "orig_segment_2.mp4", width=320, height=240, seconds=0.5)
    encode(a / "empty.mp4", width=320, height=240, frame_fn=lambda i, w, h: np.full((h, w, 3), 90, np.uint8))
    encode(a / "broken.mp4", width=320, height=240)
    (a / "broken.mp4").write_bytes((a / "broken.mp4").read_bytes()[:1500])

    videos = read_dataset([a, b])
    group = {v.name: v.group for v in videos}
    # A fake and its original share a group across part folders; a segment stays with its clip.
    assert group["swap_1080p.mp4"] == group["swap_portrait.mp4"] == group["orig.mp4"] == group["orig_segment_2.mp4"]
    assert group["lost.mp4"] == group_key("gone.mp4") == "gone"
    for seed in range(6):
        where = {}
        for name, vs in split_by_group(videos, val=0.3, test=0.3, seed=seed).items():
            for v in vs:
                where.setdefault(v.group, set()).add(name)
        assert all(len(s) == 1 for s in where.values())

    cache = CropCache(tmp_path / "cache", CropConfig(size=64, frames_per_video=4))
    counts = cache.build(videos, workers=2, progress=False)
    assert counts["failed"] == 1 and counts["extracted"] == 6
    crops = cache.load(videos)
    per_video = {v.name: int((crops.video == i).sum()) for i, v in enumerate(crops.videos)}
    for name in ("orig.mp4", "swap_1080p.mp4", "swap_portrait.mp4"):
        assert per_video[name] >= 3, per_video  # faces found in 4:4:4, 1080p and portrait MPEG-4 clips
    assert crops.landmarks is not None and np.isfinite(crops.landmarks).all()
    assert crops.outline is not None and np.isfinite(crops.outline).all(axis=(1, 2)).mean() > 0.9
    # Landmarks are in crop pixels: inside the crop, eyes above the mouth.
    assert (crops.landmarks >= 0).all() and (crops.landmarks <= 64).all()
    assert (crops.landmarks[:, :2, 1].mean(1) < crops.landmarks[:, 3:, 1].mean(1)).all()
    skipped = cache.skipped(videos)
    assert set(skipped) == {"broken.mp4", "empty.mp4"}  # every skipped video, with its reason
    assert skipped["empty.mp4"] == "no face found"
    reasons = skip_reasons(skipped)
    assert sum(reasons.values()) == 2 and reasons["no face found"] == 1


@pytest.fixture(scope="module")
def real_only_run(tmp_path_factory):
    """``forensics train --real-only CAMS`` on 20 generated REAL clips in a plain folder (no labels)."""
    from trainer.synth import generate_dataset

    root = tmp_path_factory.mktemp("realonly")
    generate_dataset(root / "gen", 20, seed=8, seconds=1.0, fake_ratio=0.0, difficulty=0.0)
    cams = root / "cams"
    cams.mkdir()
    for p in (root / "gen").rglob("*.mp4"):
        shutil.copy(p, cams / p.name)
    env = {**os.environ, "FORENSICS_STATE_DIR": str(root / "state"), "FORENSICS_MODELS_DIR": str(root / "models"),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "forensics.cli", "train", "--real-only", str(cams), "--size", "64", "--frames", "10",
           "--gan-epochs", "10", "--adv-epochs", "1", "--batch-size", "32", "--lr", "1e-3", "--gen-weight", "0",
           "--eval-subset", "32", "--threads", "1", "--no-progress", "--no-eval"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500, cwd=root, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "models": root / "models", "summary": json.loads(proc.stdout)}


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a training run; minutes on an idle 2-core machine
def test_real_only_training_separates_held_out_self_blended_fakes(real_only_run):
    art = Registry(real_only_run["models"]).load()
    prov = art.manifest["provenance"]
    assert prov["data"] == "real" and prov["fakes"] == "self-blended" and prov["sources"] == ["self-blended"]
    assert prov["videos"]["train"]["fake"] == 0 and prov["crops"]["train"]["self_blended"] > 0
    metrics = json.loads((art.path / "report" / "metrics.json").read_text())
    test = metrics["test"]["adversarially_trained"]
    # The test split: held-out REAL clips and self-blended fakes of them, never seen in training.
    assert prov["self_blended"]["test"]["blended"] == prov["crops"]["test"]["self_blended"] > 0
    assert test["clean_frame_auc"] > 0.7, test  # measured on held-out data, threshold set on validation
    assert 0 < art.manifest["thresholds"]["video_prob"] < 1
    assert test["video_accuracy"] > 0.6, test


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a training run; minutes on an idle 2-core machine
def test_manifest_provenance_round_trips_to_models_list_scan_and_alerts(real_only_run, trained, tmp_path):
    from forensics.cli import format_alert
    from forensics.config import Settings
    from forensics.model import load_model
    from forensics.scan import scan_file

    real = Registry(real_only_run["models"]).load()
    assert real_only_run["summary"]["trained_on"] == real.manifest["provenance"]
    synthetic = Registry(trained["models_dir"]).load(trained["version"])
    assert synthetic.manifest["provenance"]["data"] == "synthetic"
    env = {**os.environ, "FORENSICS_MODELS_DIR": str(real_only_run["models"])}
    out = subprocess.run([sys.executable, "-m", "forensics.cli", "models", "list", "--json"], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout  # fmt: skip
    row = json.loads(out)[0]
    assert row["provenance"] == real.manifest["provenance"] and row["synthetic_only"] is False

    clip = next((real_only_run["root"] / "cams").iterdir())
    runs = {}
    for name, models in (("real", real_only_run["models"]), ("synthetic", trained["models_dir"])):
        env = {**os.environ, "FORENSICS_MODELS_DIR": str(models)}
        runs[name] = subprocess.run([sys.executable, "-m", "forensics.cli", "scan", str(clip)], env=env,
                                    capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
        assert runs[name].returncode == 0, runs[name].stderr[-2000:]
    warn = [line for line in runs["synthetic"].stderr.splitlines() if "not meaningful" in line]
    assert len(warn) == 1 and warn[0].startswith("forensics: warning: model ")  # exactly ONE line
    assert "[synthetic-only model]" in runs["synthetic"].stdout
    assert "not meaningful" not in runs["real"].stderr + runs["real"].stdout

    model = load_model(Registry(trained["models_dir"]), trained["version"])
    verdict = scan_file(clip, Settings(models_dir=trained["models_dir"]), model)
    assert verdict["model"]["synthetic_only"] is True and verdict["trained_on"]["data"] == "synthetic"
    line = format_alert({"kind": "verdict", "source": "drop", **verdict})
    assert line.endswith("[synthetic-only model: not meaningful on real video]")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a training run; minutes on an idle 2-core machine
def test_256_px_model_trains_exports_and_serves(tmp_path, small_dataset):
    from forensics.config import Settings
    from forensics.model import load_model
    from forensics.scan import scan_file
    from trainer.train import TrainConfig, train

    cfg = TrainConfig(data=[str(small_dataset)], image_size=256, arch="resnet", frames_per_video=2, gan_epochs=1,
                      adv_epochs=1, batch_size=16, gen_weight=0, eval_subset=8, eval_pgd_steps=2, pgd_train_steps=1,
                      val_share=0.25, test_share=0.25, progress=False, evaluate=False, threads=1,
                      run_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "crops"),
                      models_dir=str(tmp_path / "models"))  # fmt: skip
    out = train(cfg)
    art = Registry(tmp_path / "models").load(out["version"])
    assert art.input_size == 256 and art.manifest["architecture"] == "resnet"
    assert art.manifest["provenance"]["input_size"] == 256
    metrics = json.loads((art.path / "report" / "metrics.json").read_text())
    assert metrics["parity"]["max_abs_diff"] < 1e-3  # ONNX export matches torch at 256 px
    model = load_model(Registry(tmp_path / "models"), out["version"])
    clip = next(small_dataset.rglob("*.mp4"))
    verdict = scan_file(clip, Settings(models_dir=tmp_path / "models"), model, full_scores=True)
    assert verdict["faces_scored"] > 0 and 0 <= verdict["score"] <= 1


@pytest.mark.parametrize("data, warned", [("synthetic", True), ("real", False)])
def test_detect_worker_start_up_prints_the_synthetic_only_line_once(tmp_path, redis_url, prefix, data, warned):
    """`forensics detect` on a synthetic-only model: one warning line on stderr at start-up; none for a real-trained one."""
    import time

    from tests.tinymodel import make_tiny_registry

    make_tiny_registry(tmp_path / "models", provenance={"data": data, "fakes": "labelled", "input_size": 16})
    env = {**os.environ, "FORENSICS_REDIS__URL": redis_url, "FORENSICS_REDIS__PREFIX": prefix,
           "FORENSICS_MODELS_DIR": str(tmp_path / "models"), "FORENSICS_STATE_DIR": str(tmp_path / "state"),
           "FORENSICS_LOG_FORMAT": "json", "OMP_NUM_THREADS": "1"}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "forensics.cli", "detect", "--consumer", "w1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the worker logs "detect worker running" once it consumes
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if "detect worker running" in line:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert any("detect worker running" in line for line in lines), lines
    warn = [line for line in lines if "not meaningful" in line]
    expected = ("forensics: warning: model v0001 was trained on synthetic faces only: its verdicts on real "
                "video are not meaningful (train on real footage: README, 'Training for real video')")  # fmt: skip
    assert warn == ([expected] if warned else []), lines


def test_held_out_test_parts_leave_out_videos_sharing_an_original_with_training(tmp_path):
    """`--test-data`: every video of the test parts, except those whose original is in a training part."""
    from trainer.data import held_out_test, recipe_splits

    train_part, test_part = tmp_path / "ffpp", tmp_path / "celebdf"
    write_part(train_part, {"033.mp4": {"label": "REAL"}, "033_097_deepfakes.mp4": {"label": "FAKE", "original": "033.mp4"}})
    write_part(test_part, {"id0_0001.mp4": {"label": "REAL"}, "id0_id1_0001.mp4": {"label": "FAKE", "original": "id0_0001.mp4"},
                           "033_segment_2.mp4": {"label": "REAL"},  # a segment of a training clip
                           "097_033_faceswap.mp4": {"label": "FAKE", "original": "033.mp4"}})  # fmt: skip
    test, dropped = held_out_test([test_part], read_dataset([train_part]))
    assert sorted(v.name for v in test) == ["id0_0001.mp4", "id0_id1_0001.mp4"] and dropped == 2
    assert held_out_test([], read_dataset([train_part])) == ([], 0)
    # A recorded cross-dataset recipe (eval, privacy, retraining) finds the same test split.
    splits = recipe_splits(read_dataset([train_part]), {"test_data": [str(test_part)], "test_share": 0.2})
    assert [v.name for v in splits["test"]] == [v.name for v in test] and len(splits["train"] + splits["val"]) == 2


def test_time_cap_keeps_the_adversarial_phase_and_stops_at_epoch_boundaries():
    import time

    from forensics.logs import get_logger
    from trainer.recipe import TrainConfig
    from trainer.timecap import TimeCap, adversarial_cost

    log = get_logger()
    assert adversarial_cost(3) == 2.5 and adversarial_cost(10, "fgsm") == adversarial_cost(10, "fgsm-rs") == 1.5
    assert adversarial_cost(3, "trades") == adversarial_cost(3, "mart") == 5
    off = TimeCap(0)
    assert not off.end_clean_phase(1e6, 2, log) and not off.stop(1e6, 1, 2, log) and not off.capped
    cap = TimeCap(1.0, adv_cost=2.5, start=time.monotonic() - 30)  # 30 s of a 60 s cap used
    assert not cap.end_clean_phase(None, 2, log)  # the first epoch always runs
    assert not cap.end_clean_phase(4.0, 2, log)  # 4 s + 2 adversarial epochs of 10 s fit in the 30 s left
    assert cap.end_clean_phase(6.0, 2, log) and cap.capped  # 6 + 2 * 15 s do not: go to the PGD phase
    assert not cap.stop(100.0, 0, 2, log)  # at least one adversarial epoch runs
    assert cap.stop(100.0, 1, 2, log) and not cap.stop(1.0, 1, 2, log)
    assert cap.record(5, 3, TrainConfig(data=[], gan_epochs=10, adv_epochs=2)) == {
        "clean": 3, "adversarial": 2, "planned": [10, 2], "time_capped": True}


@pytest.mark.slow
@pytest.mark.timeout(900)  # a tiny capped training run
def test_cross_dataset_run_capped_in_time_tests_on_the_other_parts_and_registers(tmp_path):
    """`forensics train --data A --test-data B --max-minutes M`: train/validation from A only, test on B (minus a
    clip whose original is in A), the clean phase cut by the cap, one PGD epoch kept, a registered version."""
    from trainer.synth import generate_dataset

    generate_dataset(tmp_path / "a", 16, seed=31, seconds=1.0, difficulty=0.0)
    generate_dataset(tmp_path / "b", 8, seed=32, seconds=1.0, difficulty=0.0)
    part_a, part_b = tmp_path / "a" / "dfdc_train_part_0", tmp_path / "b" / "dfdc_train_part_0"
    meta_a, meta_b = (json.loads((p / "metadata.json").read_text()) for p in (part_a, part_b))
    fake_a = next(n for n, m in meta_a.items() if m["label"] == "FAKE")
    shutil.copy(part_a / fake_a, part_b / "shares_an_original.mp4")  # B holds a fake of an original in A
    write_part(part_b, {**meta_b, "shares_an_original.mp4": {"label": "FAKE", "original": meta_a[fake_a]["original"]}})
    env = {**os.environ, "FORENSICS_STATE_DIR": str(tmp_path / "state"), "FORENSICS_MODELS_DIR": str(tmp_path / "models"),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "forensics.cli", "train", "--data", str(tmp_path / "a"), "--test-data", str(tmp_path / "b"),
           "--max-minutes", "0.05", "--gan-epochs", "50", "--adv-epochs", "1", "--pgd-steps", "1", "--size", "64",
           "--frames", "6", "--batch-size", "16", "--gen-weight", "0", "--eval-subset", "16", "--threads", "1",
           "--no-progress", "--no-eval"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=800, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    art = Registry(tmp_path / "models").load()
    prov = art.manifest["provenance"]
    assert prov["test_roots"] == [str(tmp_path / "b")] and prov["test_overlap_dropped"] == 1
    assert prov["videos"]["test"] == {"real": sum(m["label"] == "REAL" for m in meta_b.values()),
                                      "fake": sum(m["label"] == "FAKE" for m in meta_b.values())}  # all of B but the shared one
    assert sum(prov["videos"]["train"].values()) + sum(prov["videos"]["val"].values()) == len(meta_a)
    epochs = prov["epochs"]
    assert epochs["time_capped"] and epochs["clean"] < 50 and epochs["adversarial"] == 1 and epochs["planned"] == [50, 1]
    report = json.loads((art.path / "report" / "metrics.json").read_text())
    assert len(report["history"]) == epochs["clean"] + 1 and report["history"][-1]["phase"] == "adv"
    assert report["test"]["adversarially_trained"]["clean_video_auc"] is not None
