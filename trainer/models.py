"""The deepfake discriminator (D) and the DCGAN generator (G).

D takes float32 images [N,3,S,S] in [0,1] and normalizes inside, so attacks and their
epsilons live in pixel space. It returns one logit per image (logit > 0 means FAKE) and
the spatially averaged activation of every block (the "tapped features" that the
Mahalanobis scorer in ``forensics.scoring`` reads). ONNX export names the outputs
``logits, feat0, feat1, ...`` (see :meth:`Discriminator.output_names`).

Every D layer is spectrally normalized (Miyato et al. 2018). The spectral norm is
estimated by power iteration with vectors stored as buffers, and eval() uses the stored
vectors as they are: if they are stale (weights re-initialized or edited after wrapping),
sigma is underestimated, logits explode, BCE saturates and input gradients are exactly
zero, so attacks silently do nothing. :func:`warm_up_spectral_norm` fixes that and runs
at construction; call it again after touching weights by hand.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from trainer.tapped import TappedFeatures

LATENT_DIM = 100
SUPPORTED_IMAGE_SIZES = (64, 128, 256)


def _check_image_size(image_size: int) -> int:
    # 64/128/256 are what the pipeline uses; smaller powers of two keep tests fast.
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(
            f"image_size must be a power of two >= 8 (64, 128 or 256 in production), got {image_size}"
        )
    return int(math.log2(image_size)) - 2  # stride-2 steps between 4x4 and S x S


def _spectral_norm_parametrizations(model: nn.Module) -> list[tuple[nn.Module, torch.Tensor]]:
    """(parametrization, original weight) for every spectral-norm-wrapped weight in ``model``."""
    found = []
    for module in model.modules():
        parametrizations = getattr(module, "parametrizations", None)
        if parametrizations is None:
            continue
        for plist in parametrizations.values():
            for p in plist:
                # Duck-typed on the power-iteration buffers: the class itself is private.
                if hasattr(p, "_u") and hasattr(p, "_v"):
                    found.append((p, plist.original))
    return found


@torch.no_grad()
def warm_up_spectral_norm(model: nn.Module, iters: int = 200, tol: float = 1e-4) -> int:
    """Run power iterations on every spectral-norm weight until sigma estimates settle.

    Touches only the power-iteration buffers (u, v), never the weights; does not run the
    model's forward, so no input is needed. Stops early once every layer's sigma changes
    by less than ``tol`` (relative) between iterations.

    Returns the number of iterations run (0 if the model has no spectral-norm weights).
    """
    params = _spectral_norm_parametrizations(model)
    if not params:
        return 0
    was_training = [p.training for p, _ in params]
    try:
        for p, _ in params:
            p.train()  # a parametrization iterates only in training mode
        previous = None
        for i in range(1, iters + 1):
            sigmas = []
            for p, weight in params:
                normalized = p(weight)  # one power iteration; returns weight / sigma
                sigmas.append((weight.norm() / normalized.norm()).item())
            current = torch.tensor(sigmas, dtype=torch.float64)
            if previous is not None and torch.all((current - previous).abs() <= tol * previous.abs()):
                return i
            previous = current
        return iters
    finally:
        for (p, _), mode in zip(params, was_training):
            p.train(mode)


class Discriminator(TappedFeatures, nn.Module):
    """Spectral-norm convolutional discriminator with tapped features.

    Input: float32 [N,3,S,S] in [0,1]. ``forward`` returns ``(logits, features)``:
    logits float32 [N] (> 0 means FAKE) and a tuple of float32 [N, C_i], one per block,
    the spatial mean of the block's LeakyReLU output.

    Block i halves the resolution with a 4x4 stride-2 conv of width
    ``min(base_width * 2**i, max_width)``, down to a 4x4 map; a final 4x4 conv gives the logit.
    """

    def __init__(
        self, image_size: int = 64, base_width: int = 32, max_width: int = 256, layer_gain: float = 2.0
    ) -> None:
        super().__init__()
        n_blocks = _check_image_size(image_size)
        self.image_size = image_size
        # Spectral norm makes every layer at most 1-Lipschitz, and with LeakyReLU the signal
        # shrinks layer after layer: logits stay near 0 and a classifier learns very slowly
        # (val AUC 0.65 after 8 epochs on synthetic swaps, vs 0.92 with this gain). A fixed
        # gain per layer keeps the Lipschitz bound explicit: layer_gain ** (blocks + 1).
        self.layer_gain = float(layer_gain)
        self.base_width, self.max_width = int(base_width), int(max_width)
        widths = [min(base_width * 2**i, max_width) for i in range(n_blocks)]
        self.feature_dims: tuple[int, ...] = tuple(widths)
        blocks = []
        in_ch = 3
        for width in widths:
            blocks.append(
                nn.Sequential(
                    spectral_norm(nn.Conv2d(in_ch, width, 4, stride=2, padding=1)),
                    nn.LeakyReLU(0.2),
                )
            )
            in_ch = width
        self.blocks = nn.ModuleList(blocks)
        self.head = spectral_norm(nn.Conv2d(in_ch, 1, 4, stride=1, padding=0))
        warm_up_spectral_norm(self)

    def forward_with_stats(
        self, x: torch.Tensor, *, stds: bool = True
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """:meth:`forward` plus, with ``stds``, each block's per-channel spatial standard deviation.

        Returns (logits [N], (feat_i [N,C_i], ...), (std_i [N,C_i], ...) or ()). ``std_i`` is the
        population std of block i's output map, +1e-6 inside the root so gradients stay finite.
        """
        h = (x - 0.5) / 0.5
        means, spreads = [], []
        for block in self.blocks:
            h = block(h) * self.layer_gain
            mu = h.mean(dim=(2, 3))
            means.append(mu)
            if stds:
                spreads.append(torch.sqrt(torch.clamp((h * h).mean(dim=(2, 3)) - mu * mu, min=0) + 1e-6))
        logits = self.head(h).flatten() * self.layer_gain
        return logits, tuple(means), tuple(spreads)

    def logits_only(self, x: torch.Tensor) -> torch.Tensor:
        """x float32 [N,3,S,S] in [0,1] -> logits float32 [N]."""
        return self.forward(x)[0]


class WithChannelStats(nn.Module):
    """A :class:`Discriminator` that also returns per-channel spatial standard deviations per block.

    forward: x float32 [N,3,S,S] in [0,1] -> (logits [N], (feat_i [N,C_i], ...), (std_i [N,C_i], ...)),
    i.e. :meth:`Discriminator.forward_with_stats` (the form that is exported to ONNX). The anomaly
    detector reads both: pooled means alone lose what a per-pixel perturbation does to a feature
    map's spread. ONNX output names: ``logits, feat0.., std0..``.
    """

    def __init__(self, discriminator: Discriminator) -> None:
        super().__init__()
        self.discriminator = discriminator

    def output_names(self) -> list[str]:
        d = self.discriminator
        return [*d.output_names(), *(f"std{i}" for i in range(len(d.blocks)))]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        return self.discriminator.forward_with_stats(x)


class LogitsOnly(nn.Module):
    """Wraps a (logits, features) model such as :class:`Discriminator` so calling it returns logits
    float32 [N] only (for attacks), minus ``shift``: with ``shift`` the logit of a calibrated
    threshold, 0 is that threshold (DeepFool aims at it)."""

    def __init__(self, discriminator: nn.Module, shift: float = 0.0) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.shift = float(shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.discriminator(x)[0]
        return logits - self.shift if self.shift else logits


class Generator(nn.Module):
    """DCGAN generator: z float32 [N, latent_dim] -> images float32 [N,3,S,S] in [0,1].

    A 4x4 transposed conv from the latent, then 4x4 stride-2 transposed convs with
    BatchNorm + ReLU doubling the resolution; the width at resolution r is
    ``min(base_width * S / (2r), max_width)`` (D's widths mirrored); sigmoid output.
    """

    def __init__(
        self, image_size: int = 64, latent_dim: int = LATENT_DIM, base_width: int = 32, max_width: int = 256
    ) -> None:
        super().__init__()
        n_up = _check_image_size(image_size)
        self.image_size = image_size
        self.latent_dim = latent_dim
        resolutions = [4 * 2**i for i in range(n_up)]  # 4 .. S/2
        widths = [min(base_width * image_size // (2 * r), max_width) for r in resolutions]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, widths[0], 4, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for in_ch, out_ch in itertools.pairwise(widths):
            layers += [
                nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ConvTranspose2d(widths[-1], 3, 4, stride=2, padding=1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        self._init_dcgan()

    def _init_dcgan(self) -> None:
        # Radford et al. 2016: N(0, 0.02) conv weights, N(1, 0.02) BatchNorm scales.
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z float32 [N, latent_dim] -> images float32 [N,3,S,S] in [0,1]."""
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))


def build_discriminator(
    image_size: int, base_width: int = 32, max_width: int = 256, layer_gain: float = 2.0
) -> Discriminator:
    """A fresh :class:`Discriminator` with converged spectral-norm estimates."""
    return Discriminator(image_size, base_width=base_width, max_width=max_width, layer_gain=layer_gain)


def build_generator(image_size: int, latent_dim: int = LATENT_DIM) -> Generator:
    """A fresh DCGAN-initialized :class:`Generator`."""
    return Generator(image_size, latent_dim=latent_dim)


ARCHITECTURES = ("dcgan", "resnet")


def build_detector(arch: str, image_size: int, width: int = 0) -> nn.Module:
    """The detector of architecture ``arch``: ``dcgan`` (:class:`Discriminator`) or ``resnet``
    (:class:`trainer.backbones.ResNetDetector`); both take float32 [N,3,S,S] in [0,1] and return
    (logits [N], tapped features). ``width`` is the first stage's channel count, doubling per
    stage (0: the architecture's default, 32 for dcgan, 16 for resnet); the dcgan cap of 256
    channels rises to 8x a larger width."""
    if width < 0:
        raise ValueError(f"width must be >= 0, got {width}")
    if arch == "dcgan":
        if not width:
            return build_discriminator(image_size)
        return build_discriminator(image_size, base_width=width, max_width=max(256, 8 * width))
    if arch == "resnet":
        from trainer.backbones import DEFAULT_WIDTHS, ResNetDetector  # noqa: PLC0415

        widths = tuple(width * 2**i for i in range(len(DEFAULT_WIDTHS))) if width else DEFAULT_WIDTHS
        return ResNetDetector(image_size, widths=widths)
    raise ValueError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHITECTURES)}")


def detector_config(model: nn.Module) -> dict:
    """What :func:`load_discriminator` needs besides the state dict (saved in ``discriminator.pt``)."""
    if hasattr(model, "config"):
        return model.config()
    return {"arch": "dcgan", "image_size": model.image_size, "layer_gain": model.layer_gain,
            "base_width": model.base_width, "max_width": model.max_width}


def load_discriminator(path, map_location: str = "cpu") -> nn.Module:
    """The detector saved beside a registered version (``discriminator.pt``), in eval mode.

    Loaded with ``weights_only=True``: tensors and plain containers only, never arbitrary pickles.
    """
    state = torch.load(path, map_location=map_location, weights_only=True)
    if state.get("arch", "dcgan") == "resnet":
        from trainer.backbones import ResNetDetector  # noqa: PLC0415

        d = ResNetDetector(int(state["image_size"]), widths=tuple(state["widths"]), depth=int(state["depth"]))
        d.load_state_dict(state["state_dict"])
        return d.eval()
    # base_width / max_width: absent in files written before the width option (the defaults then)
    d = Discriminator(int(state["image_size"]), base_width=int(state.get("base_width", 32)),
                      max_width=int(state.get("max_width", 256)), layer_gain=float(state.get("layer_gain", 2.0)))
    d.load_state_dict(state["state_dict"])
    return d.eval()


def load_generator(path, map_location: str = "cpu") -> Generator:
    """The generator saved beside a registered version (``generator.pt``), in eval mode.

    Loaded with ``weights_only=True``: tensors and plain containers only, never arbitrary pickles.
    """
    state = torch.load(path, map_location=map_location, weights_only=True)
    g = Generator(int(state["image_size"]), latent_dim=int(state["latent_dim"]))
    g.load_state_dict(state["state_dict"])
    return g.eval()
