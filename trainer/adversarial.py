"""Adversarial-training objectives of the trainer's second phase, its radius schedule and time budget.

``TrainConfig.adv_objective`` (``forensics train --adv-objective``) selects the batch loss:

- ``pgd``: Madry et al. 2018 PGD-AT. ``adv_mix`` of every batch is replaced by PGD examples
  (``pgd_train_steps`` steps, random start) made against the current model; BCE on the whole batch
  (0.5: half clean, half adversarial, the recipe until issue 17; 1.0: Madry's all-adversarial).
- ``trades``: Zhang et al. 2019. ``BCE(clean) + adv_beta * KL(p_clean || p_adv)`` with the
  Bernoulli KL of the one fake logit; ``x_adv`` maximises that KL by PGD. For one logit the BCE
  against the soft target ``p_clean`` is the KL plus a constant in ``x_adv``, so the inner
  maximisation is :func:`trainer.attacks.pgd` with soft labels (one PGD implementation).
- ``mart``: Wang et al. 2020, for one logit. ``BCE(adv) + adv_beta * KL(p_clean || p_adv) *
  (1 - p_true(clean))``: the misclassification-aware weight makes the KL term count most on the
  clean examples the model gets wrong. MART's boosted CE adds ``-log(1 - max_wrong p(adv))``, which
  for two classes is the BCE again, so it becomes a plain BCE on ``x_adv`` (a factor of 2 folded into
  the learning rate). ``x_adv`` is PGD on BCE, as in the paper.
- ``fgsm-rs``: Wong et al. 2020, "Fast is better than free": one FGSM step of 1.25 eps from a
  uniform random start, mixed like ``pgd``; with ``grad_align > 0`` GradAlign (Andriushchenko &
  Flammarion 2020) adds ``grad_align * (1 - cos(grad_x BCE(x), grad_x BCE(x + eta)))``, eta uniform
  in the eps-ball, against catastrophic overfitting (one double backward per batch).

``adv_mix`` applies to ``pgd`` and ``fgsm-rs``; TRADES and MART train on every clean example and its
adversarial twin. Radius schedule (``eps_schedule``), as a function of the phase's progress (the share
of its batches done, or of ``adv_time_s`` when a time budget is set):

- ``steps``: ``eps`` in ``eps_steps`` equal steps (the recipe until issue 17);
- ``ramp``: linear from ``eps / 10`` to ``eps`` over the first ``eps_ramp`` of the phase, then ``eps``;
- ``constant``: ``eps`` throughout.

``adv_time_s > 0`` stops the phase once its training batches have used that many seconds (``adv_epochs``
is then a cap), so objectives can be compared at equal wall-clock; ``adv_clock = "cpu"`` counts the
process's CPU seconds instead (equal compute when other jobs share the machine; with ``threads = 1``
the two agree on an idle machine). Validation between epochs is not counted. Single process only.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from forensics.errors import ConfigError
from trainer import attacks
from trainer.models import LogitsOnly
from trainer.recipe import TrainConfig

OBJECTIVES = ("pgd", "trades", "mart", "fgsm-rs")
SCHEDULES = ("steps", "ramp", "constant")


def objective_of(cfg: TrainConfig) -> str:
    """The configured objective; the legacy ``adv_mode = "fgsm"`` means ``fgsm-rs``."""
    obj = cfg.adv_objective
    if obj == "pgd" and cfg.adv_mode == "fgsm":
        obj = "fgsm-rs"
    if obj not in OBJECTIVES:
        raise ConfigError(f"adv_objective must be one of {', '.join(OBJECTIVES)}, got {obj!r}")
    if cfg.eps_schedule not in SCHEDULES:
        raise ConfigError(f"eps_schedule must be one of {', '.join(SCHEDULES)}, got {cfg.eps_schedule!r}")
    if cfg.adv_clock not in ("wall", "cpu"):
        raise ConfigError(f"adv_clock must be wall or cpu, got {cfg.adv_clock!r}")
    if not 0 < cfg.adv_mix <= 1:
        raise ConfigError(f"adv_mix must be in (0, 1], got {cfg.adv_mix}")
    return obj


def eps_at(cfg: TrainConfig, progress: float) -> float:
    """Training radius at ``progress`` in [0, 1] through the adversarial phase."""
    progress = min(max(progress, 0.0), 1.0)
    if cfg.eps_schedule == "constant":
        return cfg.eps
    if cfg.eps_schedule == "ramp":
        return cfg.eps * min(1.0, 0.1 + 0.9 * progress / max(cfg.eps_ramp, 1e-9))
    steps = max(1, min(cfg.eps_steps, cfg.adv_epochs)) if cfg.adv_time_s <= 0 else max(1, cfg.eps_steps)
    return cfg.eps * min(steps, math.floor(progress * steps + 1e-9) + 1) / steps


def bernoulli_kl(z_p: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """KL(Bern(sigmoid(z_p)) || Bern(sigmoid(z_q))) per example, from logits [N] (stable for large |z|)."""
    p = torch.sigmoid(z_p)
    return p * (F.logsigmoid(z_p) - F.logsigmoid(z_q)) + (1 - p) * (F.logsigmoid(-z_p) - F.logsigmoid(-z_q))


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d BCE / dx [N, D], kept in the graph (create_graph) so GradAlign can be differentiated."""
    x = x.detach().requires_grad_(True)
    logits, _ = model(x)
    loss = F.binary_cross_entropy_with_logits(logits, y, reduction="sum")
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    return g.flatten(1)


def grad_align(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, gen: torch.Generator) -> torch.Tensor:
    """GradAlign regulariser: mean over the batch of 1 - cos(grad at x, grad at a uniform point of the eps-ball)."""
    eta = torch.empty_like(x).uniform_(-eps, eps, generator=gen)
    g1 = _input_grad(model, x, y)
    g2 = _input_grad(model, torch.clamp(x + eta, 0, 1), y)
    return (1 - F.cosine_similarity(g1, g2, dim=1, eps=1e-12)).mean()


class AdversarialPhase:
    """Loss of one adversarial-phase batch for the configured objective, its radius, and the time budget.

    ``history``: the trainer's epoch rows (after a resume, the time already spent counts).
    """

    def __init__(self, cfg: TrainConfig, batches_per_epoch: int, history: list[dict[str, Any]], distributed: bool):
        self.cfg = cfg
        self.objective = objective_of(cfg)
        if cfg.grad_align > 0 and self.objective != "fgsm-rs":
            raise ConfigError("grad_align applies to adv_objective fgsm-rs only")
        if cfg.grad_align > 0 and distributed:
            raise ConfigError("grad_align is single-process only (its double backward bypasses DistributedDataParallel)")
        if cfg.adv_time_s > 0 and distributed:
            raise ConfigError("adv_time_s is single-process only (ranks would stop after different batches)")
        done = [r for r in history if r.get("phase") == "adv"]
        self.elapsed = sum(r.get("budget_s", r.get("train_s", 0.0)) for r in done)
        self.batches = len(done) * batches_per_epoch
        self.total_batches = max(1, cfg.adv_epochs * batches_per_epoch)
        self.last_eps = eps_at(cfg, 0.0)

    @property
    def progress(self) -> float:
        if self.cfg.adv_time_s > 0:
            return self.elapsed / self.cfg.adv_time_s
        return self.batches / self.total_batches

    @property
    def done(self) -> bool:
        """True once the time budget (if any) is spent."""
        return self.cfg.adv_time_s > 0 and self.elapsed >= self.cfg.adv_time_s

    def loss(self, D_train: nn.Module, D: nn.Module, x: torch.Tensor, y: torch.Tensor,
             gen: torch.Generator) -> torch.Tensor:  # fmt: skip
        """The batch's training loss (a scalar with a graph into D's parameters).

        D_train: the module to train through (D, or its DistributedDataParallel wrapper); D: the bare
        discriminator (attacks run on it in eval mode). x float32 [N,3,S,S] in [0,1], y [N] 1 = FAKE.
        """
        cfg, obj = self.cfg, self.objective
        eps = self.last_eps = eps_at(cfg, self.progress)
        net = LogitsOnly(D)
        if obj in ("pgd", "fgsm-rs"):
            k = max(1, round(x.shape[0] * cfg.adv_mix))
            xa, ya = x[-k:], y[-k:]
            if obj == "pgd":
                x_adv = attacks.pgd(net, xa, ya, eps, steps=cfg.pgd_train_steps, random_start=True, generator=gen)
            else:
                x_adv = attacks.fgsm(net, xa, ya, eps, random_start=True, generator=gen)
            logits, _ = D_train(torch.cat([x[:-k], x_adv]))
            loss = F.binary_cross_entropy_with_logits(logits, y)
            if cfg.grad_align > 0:
                loss = loss + cfg.grad_align * grad_align(D, xa, ya, eps, gen)
        else:
            if obj == "trades":
                with torch.no_grad(), attacks._eval_mode(D):
                    target = torch.sigmoid(net(x))
            else:
                target = y
            x_adv = attacks.pgd(net, x, target, eps, steps=cfg.pgd_train_steps, random_start=True, generator=gen)
            logits, _ = D_train(torch.cat([x, x_adv]))
            z_clean, z_adv = logits.split(x.shape[0])
            kl = bernoulli_kl(z_clean, z_adv)
            if obj == "trades":
                loss = F.binary_cross_entropy_with_logits(z_clean, y) + cfg.adv_beta * kl.mean()
            else:
                p_true = torch.where(y == 1, torch.sigmoid(z_clean), torch.sigmoid(-z_clean))
                loss = F.binary_cross_entropy_with_logits(z_adv, y) + cfg.adv_beta * (kl * (1 - p_true)).mean()
        return loss

    def clock(self) -> float:
        """The budget's clock, in seconds (call before and after a batch)."""
        return time.process_time() if self.cfg.adv_clock == "cpu" else time.monotonic()

    def count(self, seconds: float) -> None:
        """One batch done in ``seconds`` of :meth:`clock` (attack, forward, backward, step)."""
        self.elapsed += seconds
        self.batches += 1
