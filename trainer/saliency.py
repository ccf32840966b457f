"""Which face regions drove a score: input gradients and Grad-CAM on the torch discriminator.

Used by the evaluation report (a few test fakes) and by ``forensics explain ALERT_ID`` (the
evidence crop of one alert, read back from Redis). Both maps are for the fake logit:

- *input gradient*: |d logit / d pixel|, max over colour channels, float32 [S,S];
- *Grad-CAM* (Selvaraju et al. 2017) on the block whose map is 8x8 (or the deepest if the input
  is smaller): ReLU(sum_c mean(dlogit/dA_c) * A_c), upsampled bilinearly to [S,S], scaled to [0,1].

:func:`region_shares` splits a map over the crop's layout (square crops with a margin of
``margin`` of the face box on each side, see ``forensics.faces``): background/margin, the upper
face (eyes and brows) and the lower face (nose, mouth, chin).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainer.models import Discriminator


def input_gradient(model: Discriminator, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """x float32 [N,3,S,S] in [0,1] -> (|grad| float32 [N,S,S], logits float32 [N])."""
    xs = x.clone().requires_grad_(True)
    logits = model(xs)[0]
    (g,) = torch.autograd.grad(logits.sum(), xs)
    return g.abs().amax(dim=1).numpy(), logits.detach().numpy()


def grad_cam(model: Discriminator, x: torch.Tensor, *, resolution: int = 8) -> np.ndarray:
    """x float32 [N,3,S,S] in [0,1] -> Grad-CAM float32 [N,S,S] in [0,1] for the fake logit."""
    size = x.shape[-1]
    # Block i outputs size / 2**(i+1) pixels a side; pick the one at `resolution` (or the deepest).
    index = min(len(model.blocks) - 1, max(0, round(np.log2(size / resolution)) - 1))
    maps: list[torch.Tensor] = []
    hook = model.blocks[index].register_forward_hook(lambda _m, _i, out: maps.append(out))
    try:
        logits = model(x.clone())[0]
        (g,) = torch.autograd.grad(logits.sum(), maps[0])
    finally:
        hook.remove()
    a = maps[0].detach()
    cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    top = cam.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return (cam / top).numpy()


def region_shares(saliency: np.ndarray, margin: float = 1 / 3) -> dict[str, float]:
    """Share of a saliency map [S,S] (non-negative) in background/margin, upper face and lower face."""
    s = np.asarray(saliency, np.float64)
    size = s.shape[0]
    lo = round(size * margin / (1 + 2 * margin))
    hi = size - lo
    face = np.zeros_like(s, dtype=bool)
    face[lo:hi, lo:hi] = True
    mid = (lo + hi) // 2
    upper = face.copy()
    upper[mid:] = False
    total = max(float(s.sum()), 1e-30)
    return {
        "background": float(s[~face].sum() / total),
        "upper_face": float(s[upper].sum() / total),
        "lower_face": float(s[face & ~upper].sum() / total),
    }


def explain_crop(model: Discriminator, crop: np.ndarray, *, margin: float = 1 / 3) -> dict[str, Any]:
    """Saliency of one uint8 [S,S,3] RGB crop: maps, fake probability and region shares."""
    x = torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32) / 255.0)[None]
    grad, logits = input_gradient(model, x)
    cam = grad_cam(model, x)
    return {
        "fake_prob": float(1 / (1 + np.exp(-float(logits[0])))),
        "input_gradient": grad[0],
        "grad_cam": cam[0],
        "regions_input_gradient": region_shares(grad[0], margin),
        "regions_grad_cam": region_shares(cam[0], margin),
    }


def saliency_figure(crop: np.ndarray, explained: dict[str, Any], path, *, title: str) -> None:
    """Write a PNG: the crop, its input-gradient map and its Grad-CAM overlay, with region shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(9, 3.6))
    axes[0].imshow(crop)
    axes[0].set_title(f"crop, p(fake)={explained['fake_prob']:.3f}", fontsize=9)
    axes[1].imshow(explained["input_gradient"], cmap="inferno")
    r = explained["regions_input_gradient"]
    axes[1].set_title(f"input gradient\nupper {r['upper_face']:.0%} lower {r['lower_face']:.0%} "
                      f"bg {r['background']:.0%}", fontsize=8)  # fmt: skip
    axes[2].imshow(crop)
    axes[2].imshow(explained["grad_cam"], cmap="jet", alpha=0.45)
    r = explained["regions_grad_cam"]
    axes[2].set_title(f"Grad-CAM\nupper {r['upper_face']:.0%} lower {r['lower_face']:.0%} "
                      f"bg {r['background']:.0%}", fontsize=8)  # fmt: skip
    for a in axes:
        a.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
