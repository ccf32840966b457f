"""Adversarial attacks on a single-logit fake-vs-real classifier.

``model`` is any module mapping float32 images [N,3,S,S] in [0,1] to logits float32 [N]
(logit > 0 means FAKE); wrap a :class:`trainer.models.Discriminator` in
:class:`trainer.models.LogitsOnly`. Labels ``y`` are [N] with 1 = FAKE, 0 = REAL; the
loss is BCE-with-logits, which equals cross-entropy on the two-class logits ``[0, z]``,
so FGSM and PGD here match torchattacks on that wrapping.

Every attack runs the model in eval mode and restores its previous mode afterwards; it
differentiates with respect to the input only, so parameters, their ``.grad`` and the
spectral-norm buffers are left as they were. Outputs are detached, clipped to [0,1] and
(FGSM, PGD) to the L-inf ball of radius ``eps`` around ``x``.

The BCE gradient is formed so that confident fakes keep a nonzero gradient up to
logit ~88 (autograd's ``sigmoid(z) - 1`` rounds to 0 in float32 beyond ~17, which masks
them from torchattacks); elsewhere FGSM and PGD match torchattacks bit for bit.
A saturated model (for example stale spectral-norm estimates giving logits ~1e10, see
``trainer.models.warm_up_spectral_norm``) still gives exactly zero input gradients, and a
sign-gradient attack would then silently return its input. Every attack raises
:class:`AttackError` when the input gradient is zero for *all* examples at its first
step; when only some are, the attack runs and :func:`zero_gradient_share` tells the
caller how many examples it could not move.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from forensics.errors import AttackError

# Re-exported: the query-based and adaptive attacks live in their own modules.
from trainer.attacks_adaptive import adaptive_attack  # noqa: F401
from trainer.attacks_query import QueryFn, hop_skip_jump, square  # noqa: F401


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    # eval() so spectral-norm power iterations and BatchNorm statistics do not move.
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_images(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"expected float images [N,3,S,S], got {tuple(x.shape)} {x.dtype}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError("expected images in [0,1]")


def _check_eps(eps: float) -> None:
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    z = model(x)
    if not isinstance(z, torch.Tensor) or z.shape != (x.shape[0],):
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise TypeError(
            f"model must return logits [N]={x.shape[0]}, got {shape}; wrap a Discriminator in LogitsOnly"
        )
    return z


def _loss_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(gradient of mean BCE w.r.t. x [N,3,S,S], per-example loss [N], logits [N]), all detached.

    dBCE/dz = sigmoid(z) - y is formed as -sigmoid(-z) for y = 1 (and sigmoid(z) for y = 0):
    autograd's 1 - sigmoid(z) rounds to exactly 0 in float32 once z > ~17, which would mask
    confidently classified examples from every sign-gradient attack (torchattacks included).
    Same value, same sign, until exp underflows near |z| = 88.
    """
    x = x.detach().requires_grad_(True)
    z = _logits(model, x)
    with torch.no_grad():
        dz = torch.where(y == 1, -torch.sigmoid(-z), torch.sigmoid(z) - y)
        losses = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    (grad,) = torch.autograd.grad(z, x, grad_outputs=dz / x.shape[0])
    return grad, losses, z.detach()


def _zero_rows(grad: torch.Tensor) -> torch.Tensor:
    return grad.flatten(1).abs().amax(dim=1) == 0


def _raise_if_all_zero(grad: torch.Tensor, logits: torch.Tensor, attack: str) -> None:
    if grad.shape[0] and bool(_zero_rows(grad).all()):
        raise AttackError(
            f"{attack}: the input gradient is exactly zero for all {grad.shape[0]} examples "
            f"(max |logit| {logits.abs().max().item():.3g}): the model is saturated or dead; "
            "run trainer.models.warm_up_spectral_norm on it or check the weights"
        )


def _as_targets(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    y = torch.as_tensor(y, device=x.device).detach().to(x.dtype).flatten()
    if y.shape != (x.shape[0],):
        raise ValueError(f"expected labels [N]={x.shape[0]}, got {tuple(y.shape)}")
    return y


def zero_gradient_share(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share in [0,1] of examples whose BCE input gradient is exactly zero (attacks cannot move them).

    x float32 [N,3,S,S] in [0,1]; y [N] with 1 = FAKE, 0 = REAL.
    """
    _check_images(x)
    y = _as_targets(y, x)
    with _eval_mode(model):
        grad, _, _ = _loss_gradient(model, x, y)
    return _zero_rows(grad).float().mean().item() if x.shape[0] else 0.0


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    random_start: bool = False,
    alpha: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015); with ``random_start``, FGSM-RS.

    FGSM-RS (Wong et al. 2020, "Fast is better than free") starts from a uniform point in
    the eps-ball and takes one step of ``alpha`` (default 1.25 * eps), projected back.
    Without random start the step is ``eps`` (or ``alpha`` if given).

    x float32 [N,3,S,S] in [0,1]; y [N], 1 = FAKE, 0 = REAL; eps in pixel units (e.g. 8/255).
    Returns x_adv float32 [N,3,S,S] in [0,1], ``|x_adv - x| <= eps``, detached.
    Raises AttackError if the input gradient is zero for every example.
    """
    _check_images(x)
    _check_eps(eps)
    y = _as_targets(y, x)
    step = alpha if alpha is not None else (1.25 * eps if random_start else eps)
    x = x.detach()
    with _eval_mode(model):
        start = x
        if random_start:
            noise = torch.empty_like(x).uniform_(-eps, eps, generator=generator)
            start = torch.clamp(x + noise, min=0, max=1)
        grad, _, logits = _loss_gradient(model, start, y)
        _raise_if_all_zero(grad, logits, "fgsm")
        if not random_start and step <= eps:
            # Already inside the ball; same operations as torchattacks.FGSM, bit for bit.
            return torch.clamp(x + step * grad.sign(), min=0, max=1).detach()
        x_adv = start + step * grad.sign()
        delta = torch.clamp(x_adv - x, min=-eps, max=eps)
        return torch.clamp(x + delta, min=0, max=1).detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    alpha: float | None = None,
    steps: int = 10,
    random_start: bool = True,
    restarts: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L-inf projected gradient descent (Madry et al. 2018) on the BCE loss.

    Each step ``x <- clip01(x + clip_eps(x + alpha * sign(grad) - x0))``; ``alpha`` defaults
    to 2.5 * eps / steps. With ``restarts > 1`` (each from a new random start) every
    example keeps the restart with the highest final loss; for one logit a higher BCE loss
    means a larger margin on the wrong side, so a successful restart always wins.

    x float32 [N,3,S,S] in [0,1]; y [N], 1 = FAKE, 0 = REAL; eps in pixel units.
    Returns x_adv float32 [N,3,S,S] in [0,1], ``|x_adv - x| <= eps``, detached.
    Raises AttackError if the input gradient is zero for every example at the first step.
    """
    _check_images(x)
    _check_eps(eps)
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps and restarts must be >= 1, got {steps}, {restarts}")
    y = _as_targets(y, x)
    alpha = alpha if alpha is not None else 2.5 * eps / steps
    x = x.detach()
    best = x.clone()
    best_loss = torch.full((x.shape[0],), -torch.inf, dtype=x.dtype, device=x.device)
    with _eval_mode(model):
        for restart in range(restarts):
            x_adv = x.clone()
            if random_start:
                noise = torch.empty_like(x).uniform_(-eps, eps, generator=generator)
                x_adv = torch.clamp(x_adv + noise, min=0, max=1)
            for step in range(steps):
                grad, _, logits = _loss_gradient(model, x_adv, y)
                if restart == 0 and step == 0:
                    _raise_if_all_zero(grad, logits, "pgd")
                # Same operation order as torchattacks.PGD, so results match bit for bit.
                x_adv = x_adv + alpha * grad.sign()
                delta = torch.clamp(x_adv - x, min=-eps, max=eps)
                x_adv = torch.clamp(x + delta, min=0, max=1)
            if restarts == 1:
                return x_adv.detach()
            with torch.no_grad():
                loss = F.binary_cross_entropy_with_logits(_logits(model, x_adv), y, reduction="none")
            better = loss > best_loss
            best[better] = x_adv[better]
            best_loss = torch.where(better, loss, best_loss)
    return best.detach()


def deepfool(model: nn.Module, x: torch.Tensor, *, steps: int = 50, overshoot: float = 0.02) -> torch.Tensor:
    """Binary DeepFool (Moosavi-Dezfooli et al. 2016): smallest L2 step across the decision boundary.

    For one logit f, each step is ``r = -(f / ||grad f||^2) grad f``; the steps accumulate
    into ``r_tot`` and ``x_adv = clip01(x + (1 + overshoot) * r_tot)``. An example stops as
    soon as the sign of its logit differs from its clean sign (labels are not needed:
    DeepFool flips the model's own decision). Examples that do not flip within ``steps``
    and examples with a zero gradient are returned where they got to.

    x float32 [N,3,S,S] in [0,1]. Returns x_adv float32 [N,3,S,S] in [0,1], detached.
    Raises AttackError if the logit gradient is zero for every example at the first step.
    """
    _check_images(x)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x = x.detach()
    n = x.shape[0]
    x_adv = x.clone()
    r_tot = torch.zeros_like(x)
    with _eval_mode(model):
        with torch.no_grad():
            clean_fake = _logits(model, x) > 0
        active = torch.ones(n, dtype=torch.bool, device=x.device)
        for step in range(steps):
            idx = active.nonzero().flatten()
            if idx.numel() == 0:
                break
            xa = x_adv[idx].requires_grad_(True)
            f = _logits(model, xa)
            (grad,) = torch.autograd.grad(f.sum(), xa)
            f = f.detach()
            flipped = (f > 0) != clean_fake[idx]
            grad_sq = grad.flatten(1).pow(2).sum(dim=1)
            if step == 0:
                _raise_if_all_zero(grad, f, "deepfool")
            stuck = grad_sq == 0
            active[idx[flipped | stuck]] = False
            move = ~(flipped | stuck)
            if not bool(move.any()):
                break
            idx, f, grad, grad_sq = idx[move], f[move], grad[move], grad_sq[move]
            r_tot[idx] += (-(f / grad_sq)).view(-1, 1, 1, 1) * grad
            x_adv[idx] = torch.clamp(x[idx] + (1 + overshoot) * r_tot[idx], min=0, max=1)
    return x_adv.detach()


@torch.no_grad()
def attack_success_rate(
    model: nn.Module,
    x_clean: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    threshold: float = 0.0,
    batch_size: int = 256,
) -> float:
    """Share of examples classified correctly on clean input that the attack misclassifies.

    A logit > ``threshold`` means FAKE; for fakes, success means being called real.
    x_clean, x_adv float32 [N,3,S,S] in [0,1]; y [N], 1 = FAKE, 0 = REAL.
    Returns a float in [0,1], or NaN when no clean example is classified correctly.
    """
    if x_clean.shape != x_adv.shape:
        raise ValueError(f"x_clean {tuple(x_clean.shape)} and x_adv {tuple(x_adv.shape)} differ in shape")
    y = _as_targets(y, x_clean).bool()
    if x_clean.shape[0] == 0:
        return float("nan")
    with _eval_mode(model):
        clean = torch.cat([_logits(model, b) for b in x_clean.split(batch_size)]) > threshold
        adv = torch.cat([_logits(model, b) for b in x_adv.split(batch_size)]) > threshold
    correct = clean == y
    if not bool(correct.any()):
        return float("nan")
    return ((adv != y) & correct).sum().item() / correct.sum().item()
