"""Membership inference and inversion (trainer/privacy.py) on real synthetic crops and trained models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.data import CropCache, CropConfig, CropSet, read_dataset, split_by_group
from trainer.privacy import membership, null_auc_bound, torch_prob, train_reference


def _subset(cs: CropSet, videos: list) -> CropSet:
    idx = {v.name: i for i, v in enumerate(cs.videos)}
    keep = np.isin(cs.video, [idx[v.name] for v in videos])
    return CropSet(cs.images[keep], cs.labels[keep], cs.video[keep], cs.frame_index[keep], cs.videos)


@pytest.fixture(scope="module")
def overfit(small_dataset, tmp_path_factory, one_torch_thread):
    """A 16 px discriminator trained far past convergence on 16 videos (members); 32 held-out videos."""
    videos = read_dataset([small_dataset])
    parts = split_by_group(videos, val=0.0, test=2 / 3, seed=3)
    cache = CropCache(tmp_path_factory.mktemp("crops16"), CropConfig(size=16, frames_per_video=6))
    cache.build(videos, workers=1, progress=False)
    cs = cache.load(videos)
    members, held = _subset(cs, parts["train"]), _subset(cs, parts["test"])
    model = train_reference(members, 16, epochs=30, seed=0, lr=3e-3)
    return {"model": model, "members": members, "held": held, "held_videos": parts["test"]}


@pytest.mark.slow
def test_membership_attack_finds_the_members_of_an_overfit_model(overfit):
    m, h = overfit["members"], overfit["held"]
    pm, ph = torch_prob(overfit["model"], m.images), torch_prob(overfit["model"], h.images)
    res = membership(pm, m, ph, h, threshold=0.5, video_threshold=0.5)
    crop = res["full"]["crop"]
    assert crop["members"] == len(m) and crop["non_members"] == len(h)
    assert crop["auc"] > 0.7 and crop["auc"] > crop["null_auc_99"] + 0.05, crop
    assert res["full"]["video"]["auc"] > res["full"]["video"]["null_auc_99"], res["full"]["video"]
    # Label only leaks at most what the error-rate gap leaks: never more than full precision here.
    assert res["label"]["crop"]["auc"] <= crop["auc"] + 1e-9


@pytest.mark.slow
def test_membership_attack_on_two_held_out_halves_stays_within_the_null_bound(overfit):
    """Neither half was trained on: any AUC above chance would be an artefact of the attack."""
    h, vids = overfit["held"], overfit["held_videos"]
    a, b = _subset(h, vids[: len(vids) // 2]), _subset(h, vids[len(vids) // 2 :])
    pa, pb = torch_prob(overfit["model"], a.images), torch_prob(overfit["model"], b.images)
    res = membership(pa, a, pb, b, threshold=0.5, video_threshold=0.5)
    for policy in ("full", "rounded:2", "label"):
        crop = res[policy]["crop"]
        assert crop["auc"] <= crop["null_auc_99"], (policy, crop)


def test_null_bound_is_measured_from_the_data():
    scores = np.random.default_rng(0).normal(size=200)
    small, large = null_auc_bound(scores[:20], 10), null_auc_bound(scores, 100)
    assert 0.5 < large < small < 1.0  # fewer examples: chance reaches higher AUCs


@pytest.mark.slow
def test_privacy_report_section_renders_for_a_trained_version(trained, tmp_path, one_torch_thread):
    from forensics.registry import Registry
    from trainer.privacy import run_privacy

    models = trained["models_dir"]
    version = Registry(models).current()
    cfg = trained["config"]
    out = tmp_path / "privacy"
    result = run_privacy(
        models,
        version,
        cfg.data,
        cache_dir=cfg.cache_dir,
        quick=True,
        out_dir=out,
        inversion_budget=(2, 30, 200),
    )
    html = (out / "report.html").read_text()
    saved = json.loads((out / "privacy.json").read_text())
    assert (out / "inversion.png").stat().st_size > 5000
    assert saved["membership"]["full"]["crop"]["auc"] == result["membership"]["full"]["crop"]["auc"]
    assert f"{result['membership']['full']['crop']['auc']:.3f}" in html and "inversion.png" in html
    for key in (
        "whitebox_noise",
        "whitebox_mean_face",
        "blackbox_full",
        "blackbox_rounded2",
        "blackbox_label",
    ):
        inv = result["inversion"][key]
        assert 0 <= inv["closer_to_train_share"] <= 1 and -1 <= inv["ssim_train"] <= 1 and key in html
    # the white-box inversion really drives the model toward REAL from where it started
    inv = result["inversion"]
    assert inv["whitebox_mean_face"]["mean_fake_prob"] < inv["start_mean_face"]["mean_fake_prob"]
    cost = result["verdict_cost"]
    assert cost["full"]["video_auc_cost"] == 0 and set(cost) == set(result["membership"])


@pytest.mark.slow
def test_dp_sgd_spends_at_most_its_target_epsilon_and_still_learns(overfit):
    from trainer.dp import dp_discriminator, train_dp

    assert not any("parametrizations" in n for n, _ in dp_discriminator(16).named_modules())  # no spectral norm
    m = overfit["members"]
    model, spent = train_dp(m, 16, epsilon=4.0, delta=1e-3, epochs=3, seed=0)
    assert 0 < spent <= 4.0 + 1e-6
    p = torch_prob(model, m.images)
    assert np.isfinite(p).all() and p.std() > 0
    _, no_dp = train_dp(m, 16, epsilon=None, delta=1e-3, epochs=1, seed=0)
    assert no_dp == float("inf")
