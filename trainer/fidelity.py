"""Image fidelity by SSIM: generator samples against their nearest real crops, attacks against originals.

The report's fidelity figures (issue 7):

- *clean latents*: ``n`` generator samples G(z), z ~ N(0, I), each compared by SSIM with its
  nearest REAL crop (L2 in pixel space) among the real crops given;
- *adversarial latents*: the same z moved by PGD inside an L-inf ball of radius ``eps_z`` so that
  the discriminator calls G(z') real: what a forger steering the generator against this detector
  would produce, and how much image quality that costs.

SSIM is scikit-image's ``structural_similarity`` (7x7 uniform window, ``data_range=1``,
colour channels averaged), in [−1, 1], 1 for identical images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


def ssim_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM of each pair. a, b: float [N,3,S,S] (or uint8 [N,S,S,3]) -> float64 [N]."""
    from skimage.metrics import structural_similarity

    a, b = _hwc01(a), _hwc01(b)
    if a.shape != b.shape:
        raise ValueError(f"ssim_pairs: shapes differ, {a.shape} vs {b.shape}")
    return np.array([structural_similarity(x, y, channel_axis=-1, data_range=1.0) for x, y in zip(a, b)])


def nearest(queries: np.ndarray, refs: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Index into ``refs`` of each query's nearest image by L2. Both float [N,...]; returns int [N]."""
    q = queries.reshape(len(queries), -1).astype(np.float32)
    r = refs.reshape(len(refs), -1).astype(np.float32)
    r2 = (r * r).sum(axis=1)
    out = np.empty(len(q), dtype=np.int64)
    for i in range(0, len(q), chunk):
        qi = q[i : i + chunk]
        # ||q||^2 is the same for every ref of a query: only ||r||^2 - 2 q.r decides the argmin.
        out[i : i + chunk] = np.argmin(r2[None, :] - 2.0 * qi @ r.T, axis=1)
    return out


def adversarial_latents(G: nn.Module, D: nn.Module, z: torch.Tensor, *, eps_z: float, steps: int = 10) -> torch.Tensor:
    """PGD in latent space: z' within ``eps_z`` (L-inf) of z minimising D's fake logit of G(z')."""
    G.eval()
    D.eval()
    alpha = 2.5 * eps_z / steps
    z_adv = z.clone()
    for _ in range(steps):
        z_adv.requires_grad_(True)
        logits = D(G(z_adv))[0]
        (grad,) = torch.autograd.grad(logits.sum(), z_adv)
        with torch.no_grad():
            z_adv = z + (z_adv - alpha * grad.sign() - z).clamp(-eps_z, eps_z)
    return z_adv.detach()


def generator_fidelity(G: nn.Module, D: nn.Module, real: np.ndarray, *, logit_thr: float, n: int = 1000,
                       eps_z: float = 0.5, seed: int = 0, batch: int = 200) -> dict[str, Any]:  # fmt: skip
    """SSIM of ``n`` generator samples (clean and adversarial latents) against their nearest real crops.

    real: uint8 [M,S,S,3] REAL crops. logit_thr: the discriminator's calibrated decision logit.
    Returns JSON-able statistics plus ``_ssim`` (float64 arrays, for the histograms) and
    ``_examples`` (a few samples beside their nearest real crops).
    """
    if len(real) == 0:
        raise ValueError("generator fidelity needs real crops to compare with")
    refs = real.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    gen = torch.Generator().manual_seed(seed)
    z_all = torch.randn(n, G.latent_dim, generator=gen)
    out: dict[str, Any] = {"samples": n, "eps_z": eps_z, "real_crops": len(real)}
    ssim: dict[str, np.ndarray] = {}
    examples: dict[str, np.ndarray] = {}
    for name in ("clean", "adversarial"):
        imgs, logits = [], []
        for i in range(0, n, batch):
            z = z_all[i : i + batch]
            if name == "adversarial":
                z = adversarial_latents(G, D, z, eps_z=eps_z)
            with torch.no_grad():
                x = G(z)
                logits.append(D(x)[0].numpy())
            imgs.append(x.numpy())
        x = np.concatenate(imgs)
        lg = np.concatenate(logits)
        idx = nearest(x, refs)
        s = ssim_pairs(x, refs[idx])
        ssim[name] = s
        examples[name] = np.stack([x[:6], refs[idx[:6]]])
        out[name] = {
            "ssim_mean": float(s.mean()), "ssim_median": float(np.median(s)),
            "ssim_p10": float(np.percentile(s, 10)), "ssim_p90": float(np.percentile(s, 90)),
            "called_real": float((lg <= logit_thr).mean()),
        }  # fmt: skip
    out["_ssim"] = ssim
    out["_examples"] = examples
    return out


def _hwc01(x: np.ndarray) -> np.ndarray:
    """float [N,3,S,S] in [0,1] or uint8 [N,S,S,3] -> float64 [N,S,S,3] in [0,1]."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    return np.clip(x.transpose(0, 2, 3, 1).astype(np.float64), 0.0, 1.0)
