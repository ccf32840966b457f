"""Adversarial-training objectives (trainer/adversarial.py) on a tiny generated task: cheap, one core.

The task has a robust cue (a red tint of FAKE images, noisy across images) and a non-robust one (a faint
pixel checkerboard, 0.015 of the [0,1] range, inside the 4/255 ball): a standard model leans on the
checkerboard and PGD at 4/255 flips nearly every fake; adversarial training must leave far fewer.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from forensics.errors import ConfigError
from trainer import attacks
from trainer.adversarial import OBJECTIVES, AdversarialPhase, bernoulli_kl, eps_at, grad_align
from trainer.models import LogitsOnly, build_discriminator
from trainer.recipe import TrainConfig

SIZE, N, BATCH = 16, 512, 64
# Measured on this task (seeds 0-2, this file's recipe; 3 clean + 3 adversarial epochs, PGD-10 at 4/255):
# standard training 94-100% success; pgd 53-76%, trades 27-40%, mart 24-34%, fgsm-rs 57-84%. The smallest
# drop seen was 16 points (fgsm-rs, seed 2; seed 0: 32); the test asks for 10 on seed 0.
MARGIN = 0.10


def tiny_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 [n,3,16,16] in [0,1], labels [n] alternating REAL (0) / FAKE (1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    x = rng.uniform(0.2, 0.8, (n, 3, 1, 1)) + rng.uniform(-0.2, 0.2, (n, 3, 1, 1)) * xx
    x = x + rng.uniform(-0.2, 0.2, (n, 3, 1, 1)) * yy
    y = (np.arange(n) % 2).astype(np.float32)
    checker = ((np.indices((SIZE, SIZE)).sum(0) % 2) * 2 - 1) * 0.015
    x = x + y[:, None, None, None] * checker
    x[:, 0] += y[:, None, None] * 0.08
    x = x + rng.normal(0, 0.02, x.shape)
    return torch.tensor(np.clip(x, 0, 1), dtype=torch.float32), torch.tensor(y)


def pgd_success(objective: str, seed: int = 0) -> float:
    """Share of correctly detected test fakes that PGD-10 at 4/255 makes REAL, after 3 clean epochs + 3 more."""
    x, y = tiny_images(N, seed)
    xt, yt = tiny_images(256, seed + 100)
    torch.manual_seed(seed)
    D = build_discriminator(SIZE)
    opt = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(seed)
    cfg = TrainConfig(data=[], adv_objective=objective if objective != "none" else "pgd", adv_epochs=3,
                      eps=4 / 255, pgd_train_steps=3, eps_schedule="constant")  # fmt: skip
    phase = AdversarialPhase(cfg, N // BATCH, [], distributed=False)
    for epoch in range(6):
        D.train()
        perm = torch.randperm(N, generator=gen)
        for i in range(0, N - BATCH + 1, BATCH):
            xb, yb = x[perm[i : i + BATCH]], y[perm[i : i + BATCH]]
            if epoch < 3 or objective == "none":
                loss = F.binary_cross_entropy_with_logits(D(xb)[0], yb)
            else:
                loss = phase.loss(D, D, xb, yb, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
    D.eval()
    with torch.no_grad():
        z = D(xt)[0]
    fakes = (yt == 1) & (z > 0)
    assert int(fakes.sum()) >= 20, "too few detected fakes to measure"
    xa = attacks.pgd(LogitsOnly(D), xt[fakes], torch.ones(int(fakes.sum())), 4 / 255, steps=10,
                     generator=torch.Generator().manual_seed(1))  # fmt: skip
    with torch.no_grad():
        return float((D(xa)[0] <= 0).float().mean())


def test_every_objective_lowers_pgd_success_against_standard_training(one_torch_thread):
    standard = pgd_success("none")
    assert standard > 0.8  # the task works as designed: the standard model is not robust
    for objective in OBJECTIVES:
        rate = pgd_success(objective)
        assert rate <= standard - MARGIN, (objective, rate, standard)


def test_bernoulli_kl_matches_torch_distributions():
    zp, zq = torch.tensor([-30.0, -2.0, 0.0, 3.0, 40.0]), torch.tensor([5.0, 1.0, 0.0, -3.0, 39.0])
    ref = torch.distributions.kl_divergence(torch.distributions.Bernoulli(logits=zp), torch.distributions.Bernoulli(logits=zq))
    assert torch.allclose(bernoulli_kl(zp, zq), ref, atol=1e-5)
    assert float(bernoulli_kl(zp, zp).abs().max()) < 1e-6


def test_trades_inner_maximisation_raises_the_kl(one_torch_thread):
    """PGD with soft labels p_clean (attacks.pgd) is TRADES' KL maximisation: KL beats a random point of the ball."""
    x, _ = tiny_images(64, 3)
    torch.manual_seed(0)
    net = LogitsOnly(build_discriminator(SIZE).eval())
    with torch.no_grad():
        z = net(x)
    gen = torch.Generator().manual_seed(0)
    x_adv = attacks.pgd(net, x, torch.sigmoid(z), 4 / 255, steps=5, generator=gen)
    x_rand = torch.clamp(x + torch.empty_like(x).uniform_(-4 / 255, 4 / 255, generator=gen), 0, 1)
    with torch.no_grad():
        kl_adv, kl_rand = bernoulli_kl(z, net(x_adv)).mean(), bernoulli_kl(z, net(x_rand)).mean()
    assert float((x_adv - x).abs().max()) <= 4 / 255 + 1e-6
    assert kl_adv > 2 * kl_rand, (kl_adv, kl_rand)


def test_eps_schedules_and_the_time_budget():
    base = TrainConfig(data=[], adv_objective="pgd", eps=6 / 255, adv_epochs=5, eps_steps=3)
    assert [round(eps_at(base, p) * 255, 3) for p in (0, 0.3, 0.4, 0.7, 1)] == [2, 2, 4, 6, 6]
    ramp = dataclasses.replace(base, eps_schedule="ramp", eps_ramp=0.5)
    assert eps_at(ramp, 0) == pytest.approx(0.6 / 255) and eps_at(ramp, 0.25) == pytest.approx(3.3 / 255)
    assert eps_at(ramp, 0.5) == eps_at(ramp, 0.9) == pytest.approx(6 / 255)
    assert eps_at(dataclasses.replace(base, eps_schedule="constant"), 0) == pytest.approx(6 / 255)
    timed = AdversarialPhase(dataclasses.replace(base, adv_time_s=10.0), 4, [], distributed=False)
    assert not timed.done
    timed.count(6.0)
    assert timed.progress == pytest.approx(0.6) and not timed.done
    timed.count(4.5)
    assert timed.done
    # A resumed run counts the time its finished adversarial epochs spent.
    history = [{"phase": "gan", "train_s": 99.0}, {"phase": "adv", "train_s": 8.0, "budget_s": 7.0}]
    assert AdversarialPhase(dataclasses.replace(base, adv_time_s=10.0), 4, history, False).elapsed == 7.0
    legacy = AdversarialPhase(dataclasses.replace(base, adv_mode="fgsm"), 4, [], False)
    assert legacy.objective == "fgsm-rs"
    for bad in ({"adv_objective": "free"}, {"eps_schedule": "cosine"}, {"adv_mix": 0.0}, {"grad_align": 0.1}):
        with pytest.raises(ConfigError):
            AdversarialPhase(dataclasses.replace(base, **bad), 4, [], False)
    with pytest.raises(ConfigError):  # ranks would stop after different batches
        AdversarialPhase(dataclasses.replace(base, adv_time_s=10.0), 4, [], distributed=True)


def test_train_options_reach_the_recipe(tmp_path):
    from forensics.cli import build_parser
    from forensics.cli.training import train_config
    from forensics.config import Settings

    settings = Settings(state_dir=tmp_path / "state", models_dir=tmp_path / "models")
    args = build_parser().parse_args(["train", "--data", "D", "--adv-objective", "trades", "--adv-beta", "3",
                                      "--adv-mix", "1", "--adv-time", "30", "--adv-clock", "cpu",
                                      "--eps-schedule", "ramp", "--eps-ramp", "0.3"])  # fmt: skip
    cfg = train_config(args, settings)
    assert (cfg.adv_objective, cfg.adv_beta, cfg.adv_mix, cfg.adv_time_s, cfg.adv_clock) == ("trades", 3.0, 1.0, 30.0, "cpu")
    assert (cfg.eps_schedule, cfg.eps_ramp, cfg.grad_align) == ("ramp", 0.3, 0.0)
    default = train_config(build_parser().parse_args(["train", "--data", "D"]), settings)
    assert (default.adv_objective, default.adv_time_s, default.eps_schedule) == (TrainConfig.adv_objective, 0.0, "steps")
    assert default.adv_objective == "fgsm-rs" and default.adv_epochs == 10  # measured default (README)
    for legacy, objective in (("pgd", "pgd"), ("fgsm", "fgsm-rs")):
        args = build_parser().parse_args(["train", "--data", "D", "--adv-mode", legacy])
        assert train_config(args, settings).adv_objective == objective


def test_grad_align_adds_a_differentiable_penalty(one_torch_thread):
    """fgsm-rs with GradAlign: the double backward reaches the weights, the penalty is in [0, 2]."""
    x, y = tiny_images(32, 5)
    torch.manual_seed(0)
    D = build_discriminator(SIZE)
    base = TrainConfig(data=[], adv_objective="fgsm-rs", eps=4 / 255)
    gen = torch.Generator().manual_seed(0)
    penalty = grad_align(D, x, y, 4 / 255, gen)
    assert 0 <= float(penalty) <= 2
    loss = AdversarialPhase(dataclasses.replace(base, grad_align=0.5), 1, [], False).loss(D, D, x, y, gen)
    loss.backward()
    grads = [p.grad for p in D.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(float(g.abs().max()) > 0 for g in grads)


class _Brightness(torch.nn.Module):
    """A (logits, features) model whose FAKE logit is the mean pixel value above 0.5."""

    def forward(self, x: torch.Tensor):
        m = x.mean((1, 2, 3))
        return 50 * (m - 0.5), (m[:, None],)


def test_robust_frame_auc_is_threshold_free_and_sees_the_margin():
    """bench/adv_objectives.py's robust AUC (issue 17): n crops per class, each pushed toward the other class
    by PGD-10 at 4/255; a class gap wider than 2 x 4/255 survives it, a narrower one is inverted."""
    from bench.adv_objectives import robust_auc

    labels = np.repeat([0, 1, 0], [30, 40, 30])
    rng = np.random.default_rng(0)
    for gap, survives in ((0.2, True), (0.02, False)):
        level = 0.5 + (labels - 0.5) * gap
        x = torch.tensor(np.clip(level[:, None, None, None] + rng.normal(0, 0.002, (len(labels), 3, 8, 8)), 0, 1),
                         dtype=torch.float32)  # fmt: skip
        out = robust_auc(_Brightness(), x, labels, n=20, seed=0)
        assert out["clean"] == 1.0
        assert out["pgd10_4/255"] == (1.0 if survives else 0.0), (gap, out)


def test_pgd_success_by_margin_third_falls_where_the_margin_is_inside_the_radius():
    """bench/adv_objectives.py's split_gap rows (issue 17): on the brightness model a fake is fooled by PGD-10
    at 4/255 exactly when its mean brightness is within 4/255 of 0.5 (the threshold). Fakes spread evenly
    from 0.5 + 1/255 to 0.5 + 10/255: the lowest-margin third (up to 3.9/255) falls, the others do not."""
    from bench.adv_objectives import pgd_success

    levels = 0.5 + np.linspace(1, 10, 60) / 255
    labels = np.concatenate([np.zeros(20, int), np.ones(60, int)])
    x = torch.tensor(np.concatenate([np.full(20, 0.4), levels])[:, None, None, None] * np.ones((1, 3, 8, 8)),
                     dtype=torch.float32)  # fmt: skip
    out = pgd_success(_Brightness(), x, labels, 0.5, {"seed": 0, "eval_subset": 256})
    thirds = [t["pgd10_4/255"] for t in out["by_margin_third"]]
    assert out["attacked"] == 60
    assert thirds == [1.0, 0.0, 0.0], out
    # margins below 4/255 (as logits: 50 x brightness gap) are the fooled share, within rounding of a level
    inside = float((levels - 0.5 < 4 / 255).mean())
    assert abs(out["pgd10_4/255"] - inside) <= 1 / 60 + 1e-9, (out, inside)
