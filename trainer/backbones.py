"""Detector architectures besides the spectral-norm DCGAN discriminator (``trainer.models``).

``ResNetDetector`` is a small ResNet made of torchvision's own ``BasicBlock`` (He et al. 2016),
trained from scratch: four stages of widths ``widths`` (stride 2 each after a stride-2 stem), with
BatchNorm, which the spectral-norm discriminator cannot use. It keeps the discriminator's contract,
so export, the Mahalanobis scorer, the defence and the attacks work unchanged:

- input float32 [N,3,S,S] in [0,1], normalized inside (attack radii stay in pixel space);
- ``forward`` -> (logits float32 [N], (feat_i float32 [N,C_i], ...)), one tapped feature per stage
  (the spatial mean of the stage output); ``forward_with_stats`` adds per-channel spatial stds;
- ``blocks`` (the stages, for Grad-CAM hooks), ``feature_dims``, ``feature_names``, ``output_names``.

Why not torchvision's ``resnet18`` as is: its widths (64..512) cost ~0.6 GFLOP per 128 px face, and
with PGD training (6 passes per adversarial example) that is hours per epoch on 2 CPU cores; the
same blocks at widths 16..128, one per stage, train an epoch of 1,000 crops in about a minute. A user with an ImageNet-
pretrained backbone plugs it in by adding a builder to ``ARCHITECTURES`` that returns a module
with this contract (see README, "Training for real video").
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from trainer.tapped import TappedFeatures

DEFAULT_WIDTHS = (16, 32, 64, 128)  # one BasicBlock per stage: 76 ms per 128 px crop per training step
# on a loaded 2-core CPU, 283 ms with widths 32..256 and two blocks per stage (see README)


class ResNetDetector(TappedFeatures, nn.Module):
    """Small from-scratch ResNet with tapped stage features; see the module docstring."""

    arch = "resnet"

    def __init__(self, image_size: int = 128, widths: tuple[int, ...] = DEFAULT_WIDTHS, depth: int = 1) -> None:
        super().__init__()
        if image_size < 32 or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 32 for the resnet detector, got {image_size}")
        self.image_size = image_size
        self.widths = tuple(int(w) for w in widths)
        self.depth = int(depth)
        self.layer_gain = 1.0  # the DCGAN discriminator's gain; kept so callers can read it uniformly
        self.stem = nn.Sequential(
            nn.Conv2d(3, self.widths[0], 5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(self.widths[0]),
            nn.ReLU(inplace=True),
        )
        stages = []
        in_ch = self.widths[0]
        for width in self.widths:
            layers = []
            for i in range(self.depth):
                stride = 2 if i == 0 else 1
                down = None
                if stride != 1 or in_ch != width:
                    down = nn.Sequential(nn.Conv2d(in_ch, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width))
                layers.append(BasicBlock(in_ch, width, stride=stride, downsample=down))
                in_ch = width
            stages.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(stages)
        self.feature_dims: tuple[int, ...] = self.widths
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(in_ch, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each residual branch (Goyal et al. 2017)
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward_with_stats(
        self, x: torch.Tensor, *, stds: bool = True
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """Same as ``Discriminator.forward_with_stats``: logits, stage means, stage stds (or ())."""
        h = self.stem((x - 0.5) / 0.5)
        means, spreads = [], []
        for stage in self.blocks:
            h = stage(h)
            mu = h.mean(dim=(2, 3))
            means.append(mu)
            if stds:
                spreads.append(torch.sqrt(torch.clamp((h * h).mean(dim=(2, 3)) - mu * mu, min=0) + 1e-6))
        logits = self.head(self.dropout(means[-1])).flatten()
        return logits, tuple(means), tuple(spreads)

    def logits_only(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[0]

    def config(self) -> dict:
        """What :func:`trainer.models.load_discriminator` needs to rebuild this module."""
        return {"arch": self.arch, "image_size": self.image_size, "widths": list(self.widths), "depth": self.depth}
