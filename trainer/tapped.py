"""The tapped-feature interface every detector architecture offers (DCGAN discriminator, ResNet)."""

from __future__ import annotations

import torch
from torch import nn


class TappedFeatures:
    """What export, the Mahalanobis scorer and the defence rely on in a detector: its ``blocks`` are
    tapped in order, and ``forward`` is ``forward_with_stats`` without the stds. Shared by the
    DCGAN :class:`trainer.models.Discriminator` and :class:`trainer.backbones.ResNetDetector`."""

    blocks: nn.ModuleList

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the tapped features, in output order: ``feat0, feat1, ...``."""
        return tuple(f"feat{i}" for i in range(len(self.blocks)))

    def output_names(self) -> list[str]:
        """ONNX output names in the order the flattened forward output comes: logits, feat0, ..."""
        return ["logits", *self.feature_names]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """x float32 [N,3,S,S] in [0,1] -> (logits float32 [N], (feat_i float32 [N,C_i], ...))."""
        logits, features, _ = self.forward_with_stats(x, stds=False)
        return logits, features
