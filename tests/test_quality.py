"""The input-quality gate (issue 17) on generated faces: blur, heavy JPEG, tiny faces and crops without a
face are marked low_quality, sharp face crops are not; a detect worker (real Redis, real ONNX Runtime, a
small untrained exported model) reports the reasons apart from the anomaly flag in results, evidence and
verdicts, and runs the face check in whole-frame mode."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

from forensics.config import FaceSettings, QualitySettings, load_settings
from forensics.faces import build_cropper
from forensics.quality import blockiness, face_check_on, face_checker, focus, low_quality
from forensics.streams import Keys
from forensics.wire import FrameBatch, decode, encode
from tests.tinymodel import make_tiny_registry
from trainer.synth import render_real_frames
from workers.detect import DetectWorker

SIZE = 64
DEFAULTS = QualitySettings()


def _jpeg(rgb: np.ndarray, q: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, q])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


@pytest.fixture(scope="module")
def faces() -> list[tuple[np.ndarray, object]]:
    """(frame, crop) of 8 generated REAL clips' first frame (seeds unlike bench/quality.py's), Haar crops at 64 px."""
    cropper = build_cropper(FaceSettings(detector="haar"), SIZE)
    out = []
    for seed in range(700, 708):
        frame = next(render_real_frames(seed, width=320, height=240, frames=1))
        cropper.reset()
        crops = cropper.crops_rgb(frame)
        assert crops, f"no face found in clip {seed}"
        out.append((frame, max(crops, key=lambda c: c.box[2] - c.box[0])))
    return out


def _gate(images, boxes, regions) -> list[tuple[str, ...]]:
    return low_quality(np.stack(images), boxes, regions, DEFAULTS)


def test_sharp_generated_faces_pass_the_gate(faces):
    reasons = _gate([c.image for _, c in faces], [c.box for _, c in faces], [c.region for _, c in faces])
    assert reasons == [()] * len(faces), reasons


@pytest.mark.parametrize("sigma", [1.5, 2.0, 3.0])
def test_blurred_crops_are_flagged_blur(faces, sigma):
    blurred = [cv2.GaussianBlur(c.image, (0, 0), sigma) for _, c in faces]
    reasons = _gate(blurred, [c.box for _, c in faces], [c.region for _, c in faces])
    assert all("blur" in r for r in reasons), reasons
    # Blur divides focus several times over: the statistic, not the threshold, separates them.
    assert focus(np.stack(blurred)).max() < focus(np.stack([c.image for _, c in faces])).min() / 3


def test_heavily_jpeg_coded_crops_are_blocky_and_lightly_coded_ones_are_not(faces):
    boxes = [c.box for _, c in faces]
    heavy = _gate([_jpeg(c.image, 10) for _, c in faces], boxes, None)  # the crop coded on its own grid
    light = _gate([_jpeg(c.image, 90) for _, c in faces], boxes, None)
    assert sum("blocky" in r for r in heavy) >= 7, heavy  # bench: 97.9% of q15 crops, 1% of q90
    assert not any("blocky" in r for r in light), light


def test_blockiness_follows_the_source_frames_grid_through_the_crop_region(faces):
    """A frame coded at q10 and cut 1:1 half a block off its grid: blocks show only where the grid really is."""
    frame = _jpeg(faces[0][0], 10)
    x0, y0 = 8 * 10 + 4, 8 * 5 + 4  # the crop's 8x8 lines fall mid-block in the frame
    crop = frame[y0 : y0 + SIZE, x0 : x0 + SIZE][None]
    mapped = blockiness(crop, [[x0, y0, x0 + SIZE, y0 + SIZE]])[0]
    assumed = blockiness(crop)[0]  # as if the crop started on the grid
    assert mapped > DEFAULTS.max_blockiness and assumed < 1.0, (mapped, assumed)
    # A region 6x the crop's side puts the grid under 2 crop pixels: unmeasurable, never flagged.
    assert np.isnan(blockiness(crop, [[0, 0, 6 * SIZE, 6 * SIZE]])[0])


def test_tiny_faces_are_flagged_and_the_gate_can_be_switched_off(faces):
    frame, c = faces[0]
    f = 0.25  # the frame as a camera farther away would see it: a ~25 px face
    small = cv2.resize(frame, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    region = [round(v * f) for v in c.region]
    box = [round(v * f) for v in c.box]
    patch = small[region[1] : region[3], region[0] : region[2]]
    crop = cv2.resize(patch, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    assert max(box[2] - box[0], box[3] - box[1]) < DEFAULTS.min_face_px
    assert "tiny_face" in _gate([crop], [box], [region])[0]
    assert "tiny_face" not in _gate([c.image], [c.box], [c.region])[0]
    off = QualitySettings(enabled=False)
    assert low_quality(np.stack([crop, cv2.GaussianBlur(c.image, (0, 0), 3)]), [box, c.box], None, off) == [(), ()]


def test_crop_regions_travel_on_the_wire_and_batches_without_them_still_decode(faces):
    _, c = faces[0]
    batch = FrameBatch(source="s", seq=0, images=c.image[None], frame_index=[0], pts=[0.0], wall=[time.time()],
                       box=[c.box], track=[0], region=[list(c.region)], frame_size=(320, 240))  # fmt: skip
    assert decode(encode(batch)).region == [list(c.region)]
    old = encode(FrameBatch(**{**batch.__dict__, "region": []}))
    assert b'"region"' not in old["meta"]  # what a writer before issue 17 sends
    assert decode(old).region == []


@pytest.fixture(scope="module")
def models64(tmp_path_factory):
    """A small untrained model of input 64 through the real export path (seconds, not the trained fixture)."""
    return make_tiny_registry(tmp_path_factory.mktemp("q64") / "models", size=SIZE).root


def _detect_file(r, settings, keys: Keys, batch: FrameBatch) -> tuple[DetectWorker, dict, dict]:
    """A real detect worker scores ``batch`` of a dropped file and its eof: (worker, verdict, results entry)."""
    r.xadd(keys.frames, encode(batch))
    r.xadd(keys.frames, encode(FrameBatch(source=batch.source, seq=batch.seq + 1, kind="eof",
                                          info={"file": f"{batch.source}.mp4", "batches": 1})))  # fmt: skip
    worker = DetectWorker(settings, r, consumer=f"{batch.source}-1")
    worker.load_initial()
    deadline = time.monotonic() + 30
    while not worker.step_new():
        assert time.monotonic() < deadline
    (verdict,) = [json.loads(f[b"event"]) for _i, f in r.xrange(keys.alerts) if b'"kind":"verdict"' in f[b"event"]]
    (result,) = [json.loads(f[b"event"]) for _i, f in r.xrange(keys.results)]
    return worker, verdict, result


def test_detect_reports_low_quality_apart_from_anomalous_in_results_evidence_and_verdict(r, redis_url, prefix,
                                                                                         tmp_path, faces, models64):  # fmt: skip
    import shutil

    shutil.copytree(models64, tmp_path / "models", symlinks=True)
    settings = load_settings(state_dir=tmp_path / "state", models_dir=tmp_path / "models", log_format="json",
                             redis={"url": redis_url, "prefix": prefix},
                             detect={"block_ms": 50, "providers": ["CPUExecutionProvider"]})  # fmt: skip
    sharp = [c for _, c in faces[:5]]
    images = [c.image for c in sharp] + [cv2.GaussianBlur(c.image, (0, 0), 2.0) for c in sharp[:2]]
    crops = sharp + sharp[:2]
    n = len(images)
    batch = FrameBatch(source="q-file", seq=0, images=np.stack(images), frame_index=list(range(n)),
                       pts=[i / 10 for i in range(n)], wall=[time.time()] * n, box=[list(c.box) for c in crops],
                       track=[0] * n, region=[list(c.region) for c in crops], frame_size=(320, 240))  # fmt: skip
    keys = Keys(prefix)
    worker, verdict, result = _detect_file(r, settings, keys, batch)
    # Results: the seven-column rows are unchanged; the reasons travel beside them.
    assert all(len(row) == 7 for row in result["crops"]) and len(result["low_quality"]) == n
    assert result["low_quality"] == [[]] * 5 + [["blur"]] * 2
    anomalous = [row[5] for row in result["crops"]]
    # Rates are published at alerts.scores (default label: two decimals), the low-quality rate like the anomaly rate.
    assert verdict["anomaly_rate"] == pytest.approx(sum(anomalous) / n, abs=0.005)  # its own flag, untouched by the gate
    assert verdict["low_quality_rate"] == pytest.approx(2 / n, abs=0.005)
    assert verdict["low_quality"] == {"blur": 2, "blocky": 0, "tiny_face": 0, "no_face": 0}
    assert verdict["tracks"]["0"]["low_quality_rate"] == pytest.approx(2 / n, abs=0.005)
    assert "low_quality" in verdict["evidence"] and verdict["faces_scored"] == n
    # A live source's window marks the same crops (a "q" on the member's index); its alerts take their rate from it.
    live = FrameBatch(**{**batch.__dict__, "source": "q-cam", "source_kind": "live"})
    r.xadd(keys.frames, encode(live))
    deadline = time.monotonic() + 30
    while not worker.step_new():
        assert time.monotonic() < deadline
    members = [m.decode().split(":")[1] for m in r.zrange(keys.window("q-cam"), 0, -1)]
    assert sorted(members) == sorted([str(i) for i in range(5)] + ["5q", "6q"])


def test_eval_counts_ood_crops_flagged_or_gated_and_the_gate_takes_all_of_heavy_blur(faces):
    from trainer.ood import gated_rates, ood_sets

    clean = np.stack([c.image for _, c in faces])
    sets = ood_sets(clean, n=len(clean), seed=0)
    none = np.zeros(len(clean), bool)
    assert gated_rates(clean, none)["gated_rate"] == 0.0
    assert gated_rates(sets["blur"], none) == {"gated_rate": 1.0, "no_face_rate": 0.0, "flagged_or_gated_rate": 1.0}
    flagged = np.arange(len(clean)) % 2 == 0
    r = gated_rates(sets["noise"], flagged)
    gated = np.array([bool(x) for x in low_quality(sets["noise"], None, None, DEFAULTS)])
    assert r["flagged_or_gated_rate"] == pytest.approx(float((gated | flagged).mean()))


def _patches(n: int) -> np.ndarray:
    from trainer.ood import non_face_patches

    return non_face_patches(n, SIZE, seed=3)


@pytest.mark.parametrize("detector", ["blazeface", "haar"])
def test_the_face_check_marks_non_face_patches_no_face_and_passes_synthetic_face_crops(faces, detector):
    check = face_checker(detector)
    crops = np.stack([c.image for _, c in faces])
    assert check(crops).all()  # every generated face crop shows a face to both detectors
    reasons = low_quality(crops, None, None, DEFAULTS, check(crops))
    assert reasons == [()] * len(faces), reasons
    patches = _patches(10)  # cat, coffee, rocket, coins, bricks, grass, ... (skimage's sample images)
    marked = ["no_face" in r for r in low_quality(patches, None, None, DEFAULTS, check(patches))]
    # Measured on these 10 patches: Haar finds a face in none; BlazeFace alone found one in 3 (coffee, coins,
    # Hubble deep field), its landmark model confirms none of them.
    assert sum(marked) == 10, marked
    # A flat grey square has nothing to find.
    flat = np.full((1, SIZE, SIZE, 3), 128, np.uint8)
    assert "no_face" in low_quality(flat, None, None, DEFAULTS, check(flat))[0]


def test_the_face_check_runs_by_default_only_in_whole_frame_mode():
    auto = QualitySettings()
    assert auto.face_check == "auto"
    assert face_check_on(auto, "none") and not face_check_on(auto, "blazeface") and not face_check_on(auto, "haar")
    assert face_check_on(QualitySettings(face_check="on"), "blazeface")
    assert not face_check_on(QualitySettings(face_check="off"), "none")
    assert not face_check_on(QualitySettings(enabled=False, face_check="on"), "none")  # the gate off: no check either
    with pytest.raises(ValueError):
        QualitySettings(face_check="always")


def test_detect_in_whole_frame_mode_marks_frames_without_a_face_no_face(r, redis_url, prefix, tmp_path, faces,
                                                                        models64):  # fmt: skip
    """faces.detector = "none": the crops are whole frames; the worker's face check marks those showing no face."""
    import shutil

    shutil.copytree(models64, tmp_path / "models", symlinks=True)
    settings = load_settings(state_dir=tmp_path / "state", models_dir=tmp_path / "models", log_format="json",
                             redis={"url": redis_url, "prefix": prefix}, faces={"detector": "none"},
                             detect={"block_ms": 50, "providers": ["CPUExecutionProvider"]})  # fmt: skip
    frames = [cv2.resize(f, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for f, _ in faces[:4]]  # whole frames, 320x240
    images = np.concatenate([np.stack(frames), _patches(5)[[0, 2, 4]]])  # cat, rocket, bricks: no face to BlazeFace
    n = len(images)
    whole = [[0, 0, 320, 240]] * n
    batch = FrameBatch(source="nf-file", seq=0, images=images, frame_index=list(range(n)), pts=[i / 10 for i in range(n)],
                       wall=[time.time()] * n, box=whole, track=[0] * n, region=whole, frame_size=(320, 240))  # fmt: skip
    _, verdict, result = _detect_file(r, settings, Keys(prefix), batch)
    assert [("no_face" in q) for q in result["low_quality"]] == [False] * 4 + [True] * 3, result["low_quality"]
    assert verdict["low_quality"]["no_face"] == 3
    assert verdict["low_quality_rate"] == pytest.approx(3 / n, abs=0.005)
    # Face mode (the default detector): the crops came from a detector, the worker does not check again.
    face_mode = load_settings(state_dir=tmp_path / "state", models_dir=tmp_path / "models",
                              redis={"url": redis_url, "prefix": prefix + "f"})  # fmt: skip
    assert not face_check_on(face_mode.quality, face_mode.faces.detector)
