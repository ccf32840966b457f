"""trainer.attacks: parity with torchattacks, strength on a trained model, bounds, zero gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from forensics.errors import AttackError
from forensics.runtime import OnnxDiscriminator
from trainer.attacks import attack_success_rate, deepfool, fgsm, pgd, square, zero_gradient_share
from trainer.attacks_adaptive import adaptive_attack, run_to_convergence
from trainer.export import export_discriminator
from trainer.models import LogitsOnly, build_discriminator

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _checkerboard_problem(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images; fakes (y=1) carry a pixel checkerboard of amplitude 0.02..0.10.

    Faint fakes sit close to the boundary, so an eps of a few /255 flips some, not all.
    """
    base = F.interpolate(torch.rand(n, 3, 8, 8, generator=generator), size=SIZE, mode="bilinear")
    base = 0.25 + 0.5 * base
    y = (torch.rand(n, generator=generator) < 0.5).float()
    idx = torch.arange(SIZE)
    checker = ((idx.view(-1, 1) + idx.view(1, -1)) % 2).float() * 2 - 1
    amplitude = 0.02 + 0.08 * torch.rand(n, 1, 1, 1, generator=generator)
    x = base + amplitude * y.view(-1, 1, 1, 1) * checker
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained():
    """(model returning logits [N], test images [128,3,32,32], labels [128]) after ~1.5 s of training."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = LogitsOnly(build_discriminator(SIZE, base_width=16, max_width=64))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.5, 0.999))
    for _ in range(150):
        x, y = _checkerboard_problem(32, generator)
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    x, y = _checkerboard_problem(128, generator)
    return model, x, y


class TwoClassLogits(nn.Module):
    """[0, z] as two-class logits: cross-entropy on them equals BCE-with-logits on z."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # torchattacks calls .train() after the attack when the wrapper was in training
        # mode (the default), which would leave the shared model's spectral norm iterating.
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return torch.stack([torch.zeros_like(z), z], dim=1)


class ScaledLogits(nn.Module):
    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.model(x)


class MeanBrightness(nn.Module):
    """logit = mean pixel value - 0.5: bright images are called FAKE."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3)) - 0.5


class ZeroWeights(nn.Module):
    """A dead model: a linear layer with zero weights, so every input gradient is exactly zero."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * SIZE * SIZE, 1)
        nn.init.zeros_(self.linear.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)).flatten()


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return ((model(x) > 0).float() == y).float().mean().item()


def _unsaturated(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # torchattacks' softmax gradient rounds to 0 beyond |z| ~ 17; compare where it does not.
    with torch.no_grad():
        keep = model(x).abs() < 15
    return x[keep], y[keep]


def test_fgsm_matches_torchattacks_bit_for_bit(trained):
    model, x, y = trained
    x, y = _unsaturated(model, x, y)
    assert len(x) > 64 and 0 < y.mean().item() < 1
    eps = 4 / 255
    ours = fgsm(model, x, y, eps)
    theirs = torchattacks.FGSM(TwoClassLogits(model), eps=eps)(x, y.long())
    assert torch.equal(ours, theirs)


def test_pgd_matches_torchattacks_without_random_start(trained):
    model, x, y = trained
    x, y = _unsaturated(model, x, y)
    eps = 4 / 255
    ours = pgd(model, x, y, eps, alpha=eps / 4, steps=10, random_start=False)
    theirs = torchattacks.PGD(TwoClassLogits(model), eps=eps, alpha=eps / 4, steps=10, random_start=False)(
        x, y.long()
    )
    assert torch.equal(ours, theirs)


def test_confidently_classified_examples_are_still_attacked_where_torchattacks_stalls(trained):
    model, x, y = trained
    saturated = ScaledLogits(model, 4.0).eval()
    with torch.no_grad():
        logits = saturated(x)
    # Confident fakes: 1 - sigmoid(z) rounds to 0 in float32 beyond z ~ 17, exp(-z) not until ~88.
    # (Confident reals are safe either way: sigmoid(z) itself stays nonzero.)
    confident = (y == 1) & (logits > 20) & (logits < 80)
    assert confident.sum().item() >= 10
    x, y = x[confident], y[confident]
    eps = 2 / 255
    theirs = torchattacks.FGSM(TwoClassLogits(saturated), eps=eps)(x, y.long())
    ours = fgsm(saturated, x, y, eps)
    assert torch.equal(theirs, x)  # masked: the attack did nothing
    moved = (ours - x).flatten(1).abs().amax(dim=1)
    assert moved.min().item() == pytest.approx(eps, abs=1e-6)
    with torch.no_grad():
        assert (saturated(ours) - saturated(x)).abs().min().item() > 0  # and the logits moved


def test_attacks_lower_accuracy_of_a_trained_discriminator(trained):
    model, x, y = trained
    clean = _accuracy(model, x, y)
    assert clean >= 0.95
    eps = 8 / 255
    generator = torch.Generator().manual_seed(1)
    after_fgsm = _accuracy(model, fgsm(model, x, y, eps), y)
    after_fgsm_rs = _accuracy(model, fgsm(model, x, y, eps, random_start=True, generator=generator), y)
    after_pgd = _accuracy(model, pgd(model, x, y, eps, steps=10, restarts=2, generator=generator), y)
    assert after_fgsm <= clean - 0.3
    assert after_fgsm_rs <= clean - 0.3
    assert after_pgd <= after_fgsm + 0.02  # iterating never does worse than one step here
    x_df = deepfool(model, x)
    assert attack_success_rate(model, x, x_df, y) >= 0.95


def test_deepfool_steps_just_across_the_boundary(trained):
    model, x, _ = trained
    x_adv = deepfool(model, x)
    with torch.no_grad():
        clean, adv = model(x), model(x_adv)
        flipped = (clean > 0) != (adv > 0)
        halfway = model(x + 0.5 * (x_adv - x))
    assert flipped.float().mean().item() >= 0.95
    # Minimal: half the perturbation mostly does not cross yet.
    assert ((halfway > 0) == (clean > 0))[flipped].float().mean().item() >= 0.8
    assert x_adv.min().item() >= 0 and x_adv.max().item() <= 1


@pytest.mark.parametrize(
    "attack",
    [
        lambda m, x, y, eps, g: fgsm(m, x, y, eps),
        lambda m, x, y, eps, g: fgsm(m, x, y, eps, random_start=True, generator=g),
        lambda m, x, y, eps, g: pgd(m, x, y, eps, steps=5, restarts=2, generator=g),
        lambda m, x, y, eps, g: pgd(m, x, y, eps, alpha=eps, steps=3, random_start=False),
    ],
    ids=["fgsm", "fgsm-rs", "pgd-restarts", "pgd-large-alpha"],
)
def test_attacks_stay_in_the_eps_ball_and_unit_range(trained, attack):
    model, x, y = trained
    eps = 6 / 255
    x_adv = attack(model, x, y, eps, torch.Generator().manual_seed(2))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert (x_adv - x).abs().max().item() <= eps + 1e-6
    assert x_adv.min().item() >= 0 and x_adv.max().item() <= 1


def test_pgd_restarts_keep_the_highest_loss_per_example(trained):
    model, x, y = trained
    eps = 3 / 255

    def losses(x_adv):
        with torch.no_grad():
            return F.binary_cross_entropy_with_logits(model(x_adv), y, reduction="none")

    single = losses(pgd(model, x, y, eps, steps=3, generator=torch.Generator().manual_seed(7)))
    repeat = losses(pgd(model, x, y, eps, steps=3, generator=torch.Generator().manual_seed(7)))
    several = losses(pgd(model, x, y, eps, steps=3, restarts=4, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(single, repeat)  # a seeded generator makes PGD reproducible
    assert (several >= single).all()  # the first restart is the single run; others only replace it
    assert (several > single).any()


def test_attacks_leave_model_parameters_buffers_grads_and_mode_unchanged():
    torch.manual_seed(3)
    model = LogitsOnly(build_discriminator(SIZE, base_width=8, max_width=32)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 3, SIZE, SIZE)
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    fgsm(model, x, y, 4 / 255, random_start=True)
    pgd(model, x, y, 4 / 255, steps=2)
    deepfool(model, x, steps=3)
    zero_gradient_share(model, x, y)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # incl. spectral-norm u, v
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    "attack",
    [
        lambda m, x, y: fgsm(m, x, y, 4 / 255),
        lambda m, x, y: fgsm(m, x, y, 4 / 255, random_start=True),
        lambda m, x, y: pgd(m, x, y, 4 / 255, steps=2),
        lambda m, x, y: deepfool(m, x),
    ],
    ids=["fgsm", "fgsm-rs", "pgd", "deepfool"],
)
def test_a_model_with_zero_input_gradients_raises_attack_error(attack):
    x = torch.rand(4, 3, SIZE, SIZE)
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    with pytest.raises(AttackError, match="gradient is exactly zero for all 4 examples"):
        attack(ZeroWeights(), x, y)


def test_stale_spectral_norm_saturates_and_raises_attack_error():
    torch.manual_seed(4)
    d = build_discriminator(SIZE, base_width=8, max_width=32)
    with torch.no_grad():
        for m in d.modules():
            if isinstance(m, nn.Conv2d):
                m.parametrizations.weight.original.normal_(0.0, 0.02)  # u, v now stale
    model = LogitsOnly(d).eval()
    x = torch.rand(6, 3, SIZE, SIZE)
    with torch.no_grad():
        predicted = (model(x) > 0).float()
    with pytest.raises(AttackError, match="saturated"):
        pgd(model, x, predicted, 4 / 255)
    # Half the labels wrong: those examples still have gradients, the rest cannot move.
    mixed = torch.where(torch.arange(6) < 3, predicted, 1 - predicted)
    assert zero_gradient_share(model, x, mixed) == pytest.approx(0.5)
    x_adv = pgd(model, x, mixed, 4 / 255, random_start=False)
    assert torch.equal(x_adv[:3], x[:3])
    assert (x_adv[3:] - x[3:]).flatten(1).abs().amax(dim=1).min().item() > 0


def test_attack_success_rate_counts_only_examples_correct_on_clean_input():
    model = MeanBrightness()
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])

    def images(means):
        return torch.tensor(means).view(-1, 1, 1, 1).expand(-1, 3, SIZE, SIZE).clone()

    clean = images([0.7, 0.3, 0.2, 0.8])  # correct: 0 and 2; 1 and 3 are already wrong
    adv = images([0.4, 0.7, 0.3, 0.8])  # 0 flipped to REAL, 2 still REAL
    assert attack_success_rate(model, clean, adv, y) == pytest.approx(0.5)
    assert attack_success_rate(model, clean, images([0.4, 0.3, 0.6, 0.8]), y) == pytest.approx(1.0)
    assert attack_success_rate(model, clean, adv, y, threshold=0.25) == pytest.approx(0.0)  # nothing FAKE
    none_correct = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert math.isnan(attack_success_rate(model, images([0.7, 0.7, 0.2, 0.2]), adv, none_correct))


def test_square_through_onnx_runtime_matches_torchattacks_on_the_torch_model(trained, tmp_path):
    """The ORT-wrapped Square is torchattacks' Square: same seed, same squares, same decisions.

    Square draws its squares from torch's generator seeded with ``seed``, independently of the model's
    answers; the two runs can only part where ONNX Runtime and torch (equal to the export's 1e-4
    parity tolerance) disagree on whether a candidate lowers the margin, a tie no continuous loss
    hits often. So the same images must be fooled, with at most one of 16 allowed to differ, and
    the adversarial images must be equal for the rest.
    """
    model, x, y = trained
    export_discriminator(model.discriminator, tmp_path / "toy.onnx", x[:8])
    onnx = OnnxDiscriminator(tmp_path / "toy.onnx", intra_op_threads=1)
    with torch.no_grad():
        z = model(x)
    # A threshold among the fakes' logits, so some fakes sit near it and some far: a mixed outcome.
    zf, xf = z[y == 1], x[y == 1]
    t = float(zf.quantile(0.3))
    order = torch.argsort(zf)
    fakes = xf[order[zf[order] > t][:16]]
    budget, eps = 300, 4 / 255
    ours = square(lambda xs: onnx.run_float(xs).logits, fakes, threshold=t, eps=eps, n_queries=budget, seed=0)
    # torchattacks counts iterations after its first query; square() counts every query.
    ref = torchattacks.Square(TwoClassLogits(LogitsOnly(model.discriminator, t)), norm="Linf", eps=eps,
                              n_queries=budget - 1, seed=0)(fakes, torch.ones(len(fakes), dtype=torch.long))  # fmt: skip
    with torch.no_grad():
        ref_success = (model(ref) <= t).numpy()
    assert 0 < ref_success.sum() < len(fakes), ref_success  # a comparison that can fail
    assert (ours["success"] != ref_success).sum() <= 1, (ours["success"], ref_success)
    same = (ours["x"] - ref).flatten(1).abs().amax(dim=1) <= 1e-6
    assert same.sum() >= len(fakes) - 1
    linf = (ours["x"] - fakes).flatten(1).abs().amax(dim=1)
    assert float(linf.max()) <= eps + 1e-6 and 0 <= float(ours["x"].min()) and float(ours["x"].max()) <= 1
    # Queries: Square's own count per image (its start + one per iteration until fooled), within the
    # budget; a fooled image stops early; every image sent to ONNX Runtime is counted.
    q = ours["queries"]
    assert q.max() <= budget and q[ours["success"]].max() < budget
    assert (q[~ours["success"]] == budget).all()
    assert ours["queries_total"] >= q.sum()


def test_run_to_convergence_stops_once_more_steps_add_less_than_a_point():
    # A fake attack whose wins grow with the step count and then level off (100 targets).
    wins = {10: 30, 20: 45, 50: 52, 100: 52, 200: 60}
    ran = []

    def attack(steps):
        ran.append(steps)
        ok = np.zeros(100, bool)
        ok[: wins[steps]] = True
        return ok, {"fooled": wins[steps] / 100}

    r = run_to_convergence(attack, (10, 20, 50, 100, 200), min_gain=0.01)
    assert ran == [10, 20, 50, 100] and r["converged"] and r["steps"] == 100
    assert [c["best_so_far"] for c in r["curve"]] == [0.30, 0.45, 0.52, 0.52]
    assert r["combined_success"] == 0.52 and r["curve"][1]["fooled"] == 0.45
    # The attacker keeps any run that won: different targets won by different runs add up.
    alt = run_to_convergence(lambda k: (np.arange(4) == (k // 10) % 4, {}), (10, 20, 30), min_gain=0.01)
    assert [c["best_so_far"] for c in alt["curve"]] == [0.25, 0.5, 0.75] and not alt["converged"]


class NoisyDetector(nn.Module):
    """A detector with randomness: its score's gradient is v plus fresh noise three times as large per call."""

    stochastic = True

    def __init__(self, v: torch.Tensor) -> None:
        super().__init__()
        self.v = v

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = 3 * self.v.abs() * torch.randn_like(self.v)
        return torch.full((len(x),), -10.0), ((self.v + r) * x).flatten(1).sum(1)


def test_eot_follows_the_expected_gradient_of_a_randomized_detector():
    torch.manual_seed(0)
    v = torch.randn(3, 8, 8)
    x = 0.25 + 0.5 * torch.rand(16, 3, 8, 8)
    kw = {"z_thr": 0.0, "s_thr": -1e6, "z_scale": 1.0, "s_scale": 1.0, "eps": 8 / 255, "steps": 20}
    drop = {}
    for eot in (1, 16):
        xa = adaptive_attack(NoisyDetector(v), x, None, eot=eot, gen=torch.Generator().manual_seed(1), **kw)
        assert (xa - x).abs().max() <= 8 / 255 + 1e-6
        drop[eot] = float(((x - xa) * v).flatten(1).sum(1).mean())  # fall of the expected score
    # One sample per step gets the sign of v right ~63% of the time, 16 averaged ~97%: the expected
    # score falls about 3.5x further (2p - 1 = 0.26 vs 0.94); ask for 2x.
    assert drop[16] > 2 * drop[1] > 0, drop
