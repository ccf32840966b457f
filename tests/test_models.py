"""trainer.models: shapes, spectral-norm sanity in eval, ONNX export parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainer.models import (
    Discriminator,
    LogitsOnly,
    build_discriminator,
    build_generator,
    warm_up_spectral_norm,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _reinitialize_weights_after_wrapping(d: Discriminator) -> None:
    # What a DCGAN-style init applied after spectral_norm does: u, v go stale.
    with torch.no_grad():
        for m in d.modules():
            if isinstance(m, nn.Conv2d):
                m.parametrizations.weight.original.normal_(0.0, 0.02)


def _bce_input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    loss = F.binary_cross_entropy_with_logits(LogitsOnly(model)(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return grad


@pytest.mark.parametrize(
    "size, widths", [(32, (32, 64, 128)), (64, (32, 64, 128, 256)), (128, (32, 64, 128, 256, 256))]
)
def test_discriminator_returns_one_logit_and_a_feature_mean_per_block(size, widths):
    torch.manual_seed(0)
    d = build_discriminator(size).eval()
    x = torch.rand(3, 3, size, size)
    logits, features = d(x)
    assert logits.shape == (3,) and logits.dtype == torch.float32
    assert [tuple(f.shape) for f in features] == [(3, w) for w in widths]
    assert d.feature_names == tuple(f"feat{i}" for i in range(len(widths)))
    assert d.output_names() == ["logits", *d.feature_names]
    assert d.feature_dims == widths
    # A tapped feature is the spatial mean of its block's output (times the fixed layer gain).
    h = (x - 0.5) / 0.5
    with torch.no_grad():
        for block, feature in zip(d.blocks, features):
            h = block(h) * d.layer_gain
            torch.testing.assert_close(feature, h.mean(dim=(2, 3)), rtol=0, atol=0)
    torch.testing.assert_close(d.logits_only(x), logits, rtol=0, atol=0)
    torch.testing.assert_close(LogitsOnly(d)(x), logits, rtol=0, atol=0)


def test_fresh_discriminator_in_eval_has_moderate_logits_and_nonzero_input_gradients():
    torch.manual_seed(1)
    d = build_discriminator(64).eval()
    x = torch.rand(8, 3, 64, 64)
    with torch.no_grad():
        logits, _ = d(x)
    assert logits.abs().max().item() < 10
    for label in (0.0, 1.0):
        grad = _bce_input_gradient(d, x, torch.full((8,), label))
        assert (grad.flatten(1).abs().amax(dim=1) > 0).all()


def test_every_spectral_norm_layer_has_unit_spectral_norm_in_eval():
    torch.manual_seed(2)
    d = build_discriminator(32).eval()
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4  # three blocks + head
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=1e-3)


def test_warm_up_repairs_stale_spectral_norm_without_touching_weights():
    torch.manual_seed(3)
    d = build_discriminator(64)
    _reinitialize_weights_after_wrapping(d)
    d.eval()
    x = torch.rand(8, 3, 64, 64)
    with torch.no_grad():
        stale = d.logits_only(x)
    assert stale.abs().min().item() > 1e3  # the trap: sigma estimated near zero
    # Confident "correct" labels: BCE saturates, gradients are exactly zero.
    grad = _bce_input_gradient(d, x, (stale > 0).float())
    assert (grad == 0).all()

    weights = [p.detach().clone() for p in d.parameters()]
    iterations = warm_up_spectral_norm(d)
    assert 1 < iterations <= 200
    assert all(torch.equal(a, b) for a, b in zip(weights, d.parameters()))
    assert not d.training  # warm-up restores the mode it found
    with torch.no_grad():
        repaired = d.logits_only(x)
    assert repaired.abs().max().item() < 10
    grad = _bce_input_gradient(d, x, (repaired > 0).float())
    assert (grad.flatten(1).abs().amax(dim=1) > 0).all()
    assert warm_up_spectral_norm(d) <= 3  # already converged


def test_discriminator_exports_to_onnx_with_dynamic_batch_and_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(4)
    d = build_discriminator(32).eval()
    path = tmp_path / "d.onnx"
    torch.onnx.export(
        d,
        (torch.rand(2, 3, 32, 32),),
        str(path),
        dynamo=True,
        input_names=["images"],
        output_names=d.output_names(),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits", "feat0", "feat1", "feat2"]
    for n in (1, 5):
        x = torch.rand(n, 3, 32, 32)
        outputs = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            logits, features = d(x)
        for got, want in zip(outputs, (logits, *features)):
            assert got.shape == tuple(want.shape)
            np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_generator_maps_latents_to_images_in_unit_range(size):
    torch.manual_seed(5)
    g = build_generator(size).eval()
    images = g(torch.randn(2, 100))
    assert images.shape == (2, 3, size, size) and images.dtype == torch.float32
    assert images.min().item() >= 0 and images.max().item() <= 1
    assert images.std().item() > 0


def test_image_size_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        build_discriminator(96)
    with pytest.raises(ValueError, match="power of two"):
        build_generator(4)


@pytest.mark.parametrize("arch, width, dims", [("dcgan", 0, (32, 64, 128)), ("dcgan", 48, (48, 96, 192)),
                                               ("resnet", 8, (8, 16, 32, 64))])
def test_detector_width_is_saved_and_reloaded(tmp_path, arch, width, dims):
    """`forensics train --width` (issue 17's capacity runs): the widths survive discriminator.pt, and the
    reloaded detector gives the same logits (an old file without base_width loads as the default)."""
    from trainer.models import build_detector, detector_config, load_discriminator

    torch.manual_seed(0)
    d = build_detector(arch, 32, width).eval()
    assert tuple(d.feature_dims) == dims
    torch.save({"state_dict": d.state_dict(), **detector_config(d)}, tmp_path / "d.pt")
    e = load_discriminator(tmp_path / "d.pt")
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(e(x)[0], d(x)[0])
    if arch == "dcgan" and not width:
        legacy = {"state_dict": d.state_dict(), "arch": "dcgan", "image_size": 32, "layer_gain": 2.0}
        torch.save(legacy, tmp_path / "old.pt")
        assert tuple(load_discriminator(tmp_path / "old.pt").feature_dims) == dims


@pytest.mark.parametrize("width", [-8, 7])
def test_trainer_rejects_a_bad_width(tmp_path, width):
    from forensics.errors import ConfigError
    from trainer.recipe import TrainConfig
    from trainer.train import Trainer

    with pytest.raises(ConfigError, match="width"):
        Trainer(TrainConfig(data=[str(tmp_path)], width=width))
