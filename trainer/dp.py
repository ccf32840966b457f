"""DP-SGD (Opacus) for a discriminator variant: what differential privacy costs here.

Opacus needs per-sample gradients, which it cannot compute through the spectral-norm
parametrization of :class:`trainer.models.Discriminator` (its power-iteration vectors are
buffers updated in the forward pass). The DP variant is the same architecture (same blocks,
widths, layer gain and tapped features) with spectral norm removed after initialisation, so its
Lipschitz bound is no longer enforced; it is trained with plain cross-entropy (no GAN phase, no
adversarial phase: PGD examples would be computed from private data outside the accountant).
:func:`dp_study` trains it with and without DP-SGD on the same crops and reports epsilon (RDP
accountant, delta = 1/N^1.1 unless given), clean AUC and the membership attack on each.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from trainer.data import CropSet, as_float_tensor
from trainer.models import Discriminator, build_discriminator


def dp_discriminator(size: int) -> Discriminator:
    """The discriminator architecture without spectral norm (weights keep their normalised init)."""
    d = build_discriminator(size)
    for mod in list(d.modules()):
        if parametrize.is_parametrized(mod, "weight"):
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
    return d


def train_dp(cs: CropSet, size: int, *, epsilon: float | None, delta: float, epochs: int = 6, batch: int = 32,
             lr: float = 1e-3, max_grad_norm: float = 1.0, seed: int = 0) -> tuple[Discriminator, float]:  # fmt: skip
    """Train :func:`dp_discriminator` on ``cs`` with DP-SGD (DP-Adam: per-sample clipping to
    ``max_grad_norm`` and Gaussian noise, Poisson batches) at (``epsilon``, ``delta``), or with the same
    Adam without clipping or noise when ``epsilon`` is None. Returns (model in eval mode, epsilon spent)."""
    torch.manual_seed(seed)
    d = dp_discriminator(size).train()
    x, y = as_float_tensor(cs.images), torch.as_tensor(cs.labels, dtype=torch.float32)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))  # fmt: skip
    opt = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.999))
    spent = math.inf
    model = d
    if epsilon is not None:
        from opacus import PrivacyEngine

        engine = PrivacyEngine(accountant="rdp")
        model, opt, loader = engine.make_private_with_epsilon(
            module=d, optimizer=opt, data_loader=loader, target_epsilon=epsilon, target_delta=delta,
            epochs=epochs, max_grad_norm=max_grad_norm,
        )  # fmt: skip
    for _ in range(epochs):
        for xb, yb in loader:
            if len(xb) == 0:  # Poisson sampling can draw an empty batch
                continue
            loss = F.binary_cross_entropy_with_logits(model(xb)[0], yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    if epsilon is not None:
        spent = float(engine.get_epsilon(delta))
        d = model._module
    return d.eval(), spent


def dp_study(train: CropSet, test: CropSet, size: int, *, epsilons=(None, 8.0, 2.0), epochs: int = 6,
             seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Clean AUC and membership AUC (loss attack, train vs test crops) with and without DP-SGD."""
    from sklearn.metrics import roc_auc_score

    from trainer.membership import auc_tpr, loss_of, torch_prob

    delta = 1.0 / len(train) ** 1.1
    out: dict[str, Any] = {"delta": delta, "epochs": epochs, "train_crops": len(train), "rows": {}}
    for eps in epsilons:
        model, spent = train_dp(train, size, epsilon=eps, delta=delta, epochs=epochs, seed=seed)
        pm, pn = torch_prob(model, train.images), torch_prob(model, test.images)
        if not (np.isfinite(pm).all() and np.isfinite(pn).all()):
            out["rows"]["no DP" if eps is None else f"eps {eps:g}"] = {"error": "training diverged (non-finite outputs)"}
            continue
        auc, tpr = auc_tpr(-loss_of(pm, train.labels), -loss_of(pn, test.labels))
        out["rows"]["no DP" if eps is None else f"eps {eps:g}"] = {
            "epsilon_spent": spent, "clean_frame_auc": float(roc_auc_score(test.labels, pn)),
            "membership_auc": auc, "membership_tpr_at_1fpr": tpr,
            "train_accuracy": float(np.mean((pm > 0.5) == train.labels)),
        }  # fmt: skip
    return out
