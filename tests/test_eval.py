"""Robustness evaluation (issue 7): attacks, sanity checks, report, CLI, on the session's trained model."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from forensics.registry import Registry
from forensics.scoring import MahalanobisScorer
from trainer.attacks import hop_skip_jump
from trainer.defence import TorchMahalanobis
from trainer.evaluate import evaluate, load_test_split, run_evaluation
from trainer.models import load_discriminator
from trainer.report import FIGURES, write_report

SMALL = {"quick": True, "max_fakes": 16, "blackbox_images": 2, "blackbox_queries": 150, "ood_n": 12,
         "square_images": 6, "square_tracks": 1, "square_queries": 300, "adaptive_frames": 8, "adaptive_tracks": 2}


@pytest.fixture(scope="module")
def parts(trained, one_torch_thread):
    art = Registry(trained["models_dir"]).load(trained["version"])
    cfg = trained["config"]
    metrics = json.loads((art.path / "report" / "metrics.json").read_text())
    test = load_test_split(cfg.data, metrics["config"], cfg.cache_dir)
    return {
        "art": art,
        "model": load_discriminator(art.path / "discriminator.pt"),
        "scorer": MahalanobisScorer.load(art.scorer_path),
        "test": test,
        "history": metrics["history"],
    }


@pytest.fixture(scope="module")
def result(trained, parts, tmp_path_factory):
    cfg = trained["config"]
    out = tmp_path_factory.mktemp("eval")
    return evaluate(
        trained["models_dir"], trained["version"], cfg.data, cache_dir=cfg.cache_dir, out_dir=out, **SMALL
    )


class Quantized(nn.Module):
    """Gradient masking on purpose: the input is rounded to 8 levels (torch.round has zero gradient)."""

    def __init__(self, d: nn.Module):
        super().__init__()
        self.d = d

    def forward(self, x):
        return self.d(torch.round(x * 7) / 7)


def test_attacks_lower_accuracy_and_respect_their_bounds(result):
    rows = result["attacks"]
    assert result["attacked_fakes"] > 0
    for name, r in rows.items():
        assert r["in_range"], name
        if r["eps"] is not None:
            assert r["linf_max"] <= r["eps"] + 1e-6, name
        assert 0 <= r["success_rate"] <= 1
    # Every attack on correctly detected fakes calls some of them real (accuracy drops from 100%).
    for name in ("fgsm@8/255", "pgd@8/255", "deepfool", "adaptive@8/255", "pgd@unbounded"):
        assert rows[name]["success_rate"] > 0, name
    assert rows["pgd@unbounded"]["success_rate"] >= 0.95
    within = rows["deepfool"]["success_within"]  # DeepFool inside the L-inf balls: never more than unbounded
    assert within["4/255"] <= within["8/255"] <= rows["deepfool"]["success_rate"]
    bb = result["blackbox"]
    assert bb["images"] == 2 and bb["found_rate"] == 1.0 and all(r["queries"] <= 150 for r in bb["per_image"])
    assert np.isfinite(result["clean"]["frame_auc"]) and 0 <= result["clean"]["frame_accuracy"] <= 1


def test_sanity_checks_pass_on_the_trained_model(result):
    checks = {c["name"]: c for c in result["sanity"]}
    for must in ("unbounded PGD reaches >= 95%", "share of zero input gradients ~0",
                 "every attack stays in [0,1] and its L-inf ball", "black-box <= white-box (8/255, same images)"):  # fmt: skip
        assert checks[must]["passed"], checks[must]
    failed = [c for c in result["sanity"] if not c["passed"]]
    # Anything else that fails on 16 fakes must be a within-noise ordering issue, and it is reported.
    assert len(failed) <= 2, failed


def test_sanity_checks_fail_on_a_gradient_masked_model(parts, tmp_path):
    masked = Quantized(parts["model"]).eval()

    def query(xs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return masked(torch.from_numpy(xs))[0].numpy()

    res = run_evaluation(
        masked, query, parts["scorer"], parts["art"].manifest["thresholds"], parts["test"], **SMALL
    )
    checks = {c["name"]: c for c in res["sanity"]}
    assert res["zero_gradient_share"] == 1.0
    assert not checks["share of zero input gradients ~0"]["passed"]
    assert not checks["unbounded PGD reaches >= 95%"]["passed"]
    assert "error" in res["attacks"]["pgd@unbounded"]
    # The decision-based attack does not need gradients: unbounded, it always finds an adversarial point.
    assert res["blackbox"]["found_rate"] == 1.0
    html = write_report(res, parts["history"], tmp_path).read_text()
    assert "FAILED sanity checks" in html and "unbounded PGD reaches" in html


def test_torch_mahalanobis_matches_the_numpy_scorer(parts):
    x = torch.from_numpy(parts["test"].images[:20]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        _, feats = parts["model"](x)
        t = TorchMahalanobis(parts["scorer"])(feats).numpy()
    ref = parts["scorer"].score([f.double().numpy() for f in feats])
    np.testing.assert_allclose(t, ref, rtol=1e-6, atol=1e-6)


def test_hop_skip_jump_is_decision_based_and_stays_in_range():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 8, 8)).astype(np.float32)
    x0 = np.clip(0.5 + 0.05 * np.sign(w), 0, 1).astype(np.float32)
    query = lambda xs: ((xs - 0.5) * w).reshape(len(xs), -1).sum(1)
    starts = np.clip(0.5 - 0.3 * np.sign(w), 0, 1)[None].astype(np.float32)
    r = hop_skip_jump(query, x0, starts, budget=300, eps=0.05, rng=rng)
    assert r["found"] and r["queries"] <= 300
    assert 0 <= r["x"].min() and r["x"].max() <= 1 and query(r["x"][None])[0] <= 0
    # It gets much closer than its starting point (L-inf 0.35).
    assert r["linf"] < 0.1


def test_report_builds_with_every_figure(result):
    out = result["report"]
    from pathlib import Path

    html = Path(out).read_text()
    assert html.count("<img") == len(FIGURES)
    for name in FIGURES:
        assert (Path(out).parent / f"{name}.png").stat().st_size > 1000
        assert f"alt='{name}'" in html
    metrics = json.loads((Path(out).parent / "metrics.json").read_text())
    assert set(metrics) >= {"clean", "attacks", "blackbox", "ood", "sanity"} and "_figures" not in metrics
    assert "All" in html or "FAILED" in html
    # The OOD table counts crops the model's crop detector (Haar here) finds no face in as gated (issue 17).
    assert "<th>of which no face</th>" in html and "the face check (haar" in html
    ood = metrics["ood"]
    assert all(v["face_check"] == "haar" and v["no_face_rate"] <= v["gated_rate"] <= v["flagged_or_gated_rate"]
               for v in ood.values())  # fmt: skip
    assert ood["non_face"]["no_face_rate"] > 0.9 and metrics["clean"]["clean_gated_rate"] < 0.05


def test_numbers_come_from_the_data(parts):
    th = parts["art"].manifest["thresholds"]
    q = lambda xs: parts["model"](torch.from_numpy(xs))[0].detach().numpy()
    small = {**SMALL, "blackbox_images": 0, "max_fakes": 8, "ood_n": 4}
    full = run_evaluation(parts["model"], q, parts["scorer"], th, parts["test"], **small)
    test = parts["test"]
    keep = test.video % 2 == 0
    from trainer.data import CropSet

    half = CropSet(
        test.images[keep], test.labels[keep], test.video[keep], test.frame_index[keep], test.videos
    )
    part = run_evaluation(parts["model"], q, parts["scorer"], th, half, **small)
    assert part["clean"]["frames"] == int(keep.sum()) < full["clean"]["frames"]
    a = [full["clean"]["frame_auc"], full["clean"]["log_loss"], full["attacks"]["pgd@4/255"]["success_rate"]]
    b = [part["clean"]["frame_auc"], part["clean"]["log_loss"], part["attacks"]["pgd@4/255"]["success_rate"]]
    assert a != b


def test_cli_eval_prints_a_summary(trained, tmp_path, capsys):
    from forensics.cli import main

    cfg = trained["config"]
    rc = main(["eval", "--models", str(trained["models_dir"]), "--model", trained["version"], *[a for d in cfg.data for a in ("--data", d)],
               "--cache", cfg.cache_dir, "--out", str(tmp_path / "ev"), "--quick", "--max-fakes", "8",
               "--blackbox-images", "1", "--blackbox-queries", "60", "--square-images", "2", "--square-tracks", "1",
               "--square-queries", "100", "--adaptive-frames", "4", "--adaptive-tracks", "1"])  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["version"] == trained["version"] and "pgd@8/255" in summary["success"]
    assert (tmp_path / "ev" / "report.html").exists()
    # The version's manifest and files are untouched.
    Registry(trained["models_dir"]).load(trained["version"])


def test_generator_fidelity_covers_1000_samples_clean_and_adversarial(result):
    g = result["ssim_generator"]
    assert g["samples"] == 1000 and g["real_crops"] > 0
    for name in ("clean", "adversarial"):
        s = g[name]
        assert -1 <= s["ssim_p10"] <= s["ssim_median"] <= s["ssim_p90"] <= 1
    # PGD on the latents makes the discriminator call more samples real, never fewer.
    assert g["adversarial"]["called_real"] >= g["clean"]["called_real"]
    # Bigger perturbations are more visible.
    ps = result["perturbation_ssim"]
    assert 1 > ps["pgd@4/255"]["ssim_mean"] > ps["pgd@8/255"]["ssim_mean"] > 0


def test_nearest_real_crop_matches_brute_force():
    from trainer.fidelity import nearest, ssim_pairs

    rng = np.random.default_rng(3)
    q, refs = rng.random((37, 3, 8, 8)), rng.random((300, 3, 8, 8))
    brute = ((q[:, None] - refs[None]) ** 2).reshape(37, 300, -1).sum(-1).argmin(1)
    np.testing.assert_array_equal(nearest(q, refs, chunk=10), brute)
    assert np.allclose(ssim_pairs(refs[:3], refs[:3]), 1.0)


def test_grad_cam_and_input_gradients_are_nonzero_maps_over_the_crop(parts):
    from trainer.saliency import explain_crop, grad_cam

    imgs = parts["test"].images
    with torch.no_grad():
        logits = parts["model"](torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255)[0]
    crop = imgs[int(torch.argmax(logits))]  # the crop the model finds most fake
    ex = explain_crop(parts["model"], crop)
    size = crop.shape[0]
    assert ex["input_gradient"].shape == ex["grad_cam"].shape == (size, size)
    assert ex["input_gradient"].max() > 0 and ex["grad_cam"].max() == pytest.approx(1.0)
    x = torch.from_numpy(parts["test"].images[:4]).permute(0, 3, 1, 2).float() / 255
    cam = grad_cam(parts["model"], x)
    assert cam.shape == (4, size, size) and cam.min() >= 0 and cam.max() <= 1 + 1e-6


def _significant_digits(number: str) -> int:
    """Significant digits of a printed number: "0.0157" -> 3, "12.30" -> 4, "1200" -> 2."""
    mantissa = re.split(r"[eE]", number.lstrip("+-"))[0]
    digits = mantissa.replace(".", "").lstrip("0")
    return len(digits) if "." in mantissa else len(digits.rstrip("0"))


def test_robustness_report_reads_like_a_report(result):
    from pathlib import Path

    from forensics.robustness import pct

    page = Path(result["report"]).read_text()
    text = re.sub(r"<[^>]+>", " ", re.sub(r"src='data:[^']*'", "", page))  # what a reader sees
    numbers = re.findall(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\w)(?!\.\d)", text)
    assert len(numbers) > 100
    too_long = [n for n in numbers if _significant_digits(n) > 4]
    assert too_long == []
    # metrics.json keeps full precision.
    metrics = json.loads((Path(result["report"]).parent / "metrics.json").read_text())
    assert metrics["attacks"]["pgd@4/255"]["success_rate"] == result["attacks"]["pgd@4/255"]["success_rate"]
    # Summary box with targets, sanity checks as check/expected/measured/verdict, capitalised sections.
    assert "<b>Summary</b>" in page and "Clean video AUC" in page and "≤\u00a015.0%" in page
    assert "<tr><th>check</th><th>expected</th><th>measured</th><th>verdict</th></tr>" in page
    sections = re.findall(r"<h2>([^<]+)</h2>", page)
    assert len(sections) >= 10 and all(s[0].isupper() for s in sections)
    assert page.count("class='follows'") >= 6
    # The attack table's detection columns are the shipped defence's (not the pooled scorer's).
    row = result["attacks"]["pgd@4/255"]
    assert "defence" in row and "shipped second line of defence (defence.npz)" in page
    cells = re.search(r"<tr><td>pgd@4/255</td>(.*?)</tr>", page).group(1)
    assert re.findall(r"<td>([^<]*)</td>", cells)[3] == pct(row["defence"]["detection_rate"])


def _toy_crops(n_videos: int, per_video: int, size: int, rng) -> "CropSet":
    """Generated crops: smooth colour fields; FAKE videos carry a faint checkerboard."""
    from trainer.data import CropSet

    idx = np.arange(size)
    checker = ((idx[:, None] + idx[None, :]) % 2 * 2 - 1)[..., None]
    labels = np.repeat(np.arange(n_videos) % 2, per_video)
    base = rng.uniform(60, 190, (n_videos * per_video, 1, 1, 3)) + rng.normal(0, 6, (n_videos * per_video, size, size, 3))
    images = np.clip(base + 12 * labels[:, None, None, None] * checker, 0, 255).astype(np.uint8)
    video = np.repeat(np.arange(n_videos), per_video)
    return CropSet(images, labels.astype(np.int64), video, np.tile(np.arange(per_video), n_videos), [None] * n_videos)


def test_adaptive_evaluation_runs_the_shipped_defence_to_convergence(one_torch_thread):
    """On a small trained toy model and its fitted defence (generated crops, seconds, not the session model)."""
    import torch.nn.functional as F

    from forensics.scoring import fit_mahalanobis
    from trainer.data import as_float_tensor
    from trainer.defence import adaptive_evaluation, fit_defence

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    train, val, test = (_toy_crops(n, 6, 16, rng) for n in (16, 8, 8))
    from trainer.models import build_discriminator

    D = build_discriminator(16, base_width=8, max_width=32)
    opt = torch.optim.Adam(D.parameters(), lr=2e-3)
    x, y = as_float_tensor(train.images), torch.from_numpy(train.labels).float()
    for _ in range(60):
        loss = F.binary_cross_entropy_with_logits(D(x)[0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    D.eval()
    with torch.no_grad():
        feats = [f.double().numpy() for f in D(x)[1]]
    pooled = fit_mahalanobis(feats, train.labels)
    defence = fit_defence(D, pooled, train, val)
    th = {"frame_prob": 0.5, "video_prob": 0.5}
    out = adaptive_evaluation(D, pooled, defence, test, th, eps=8 / 255, frames=8, tracks=2, schedule=(2, 4, 8, 16))
    for key, n in (("adaptive_frame", 8), ("adaptive_track", 2)):
        r = out[key]
        assert 0 < r["attacked"] <= n and r["bpda"] == list(defence.squeezers) and r["eot_samples"] == 1
        best = [c["best_so_far"] for c in r["curve"]]
        assert best == sorted(best) and r["combined_success"] == best[-1]
        assert all(c["success"] <= c["best_so_far"] for c in r["curve"])
        # It stopped exactly when a step count added less than a point, or ran the whole schedule.
        gains = np.diff(best)
        assert (r["converged"] and gains[-1] < 0.01 and (gains[:-1] >= 0.01).all()) or (
            not r["converged"] and len(best) == 4 and (gains >= 0.01).all())
        # Combined success needs the fake called real: never above the last run's fooled share plus earlier wins.
        assert r["curve"][-1]["success"] <= r["fooled"]
