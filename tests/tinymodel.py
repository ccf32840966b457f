"""A small real model version for tests that need a detect worker but not a trained one.

An untrained discriminator exported through the real ONNX path with a fitted Mahalanobis scorer
and calibrated (fixed) thresholds: real ONNX Runtime, real registry, real sha256 checks, made in
seconds instead of the minutes of the session's training run.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from forensics.registry import Registry


def make_tiny_registry(root: Path, size: int = 16, versions: int = 1, provenance: dict | None = None) -> Registry:
    """A registry at ``root`` with ``versions`` exported versions of input ``size``; v0001 is current.
    ``provenance``: the manifest's training record (issue 15), e.g. ``{"data": "synthetic"}``; none by default."""
    import torch

    from forensics.scoring import calibrate_threshold, fit_mahalanobis
    from trainer.export import export_discriminator
    from trainer.models import build_discriminator

    reg = Registry(root)
    for seed in range(versions):
        torch.manual_seed(seed)
        d = build_discriminator(size, base_width=8, max_width=32)
        version, vdir = reg.new_version()
        export_discriminator(d, vdir / "model.onnx", torch.rand(4, 3, size, size))
        with torch.no_grad():
            _, feats = d(torch.rand(64, 3, size, size))
        scorer = fit_mahalanobis([f.double().numpy() for f in feats], np.arange(64) % 2)
        clean = scorer.score([f.double().numpy() for f in feats])
        scorer = dataclasses.replace(scorer, threshold=calibrate_threshold(clean, 0.05), fpr=0.05)
        scorer.save(vdir / "scorer.npz")
        reg.write_manifest(version, {"input_size": size, "metrics": {}, "thresholds": {"frame_prob": 0.5, "video_prob": 0.5},
                                     **({"provenance": provenance} if provenance else {})})  # fmt: skip
    reg.promote("v0001", reason="test")
    return reg


def copy_registry(template: Path, dest: Path) -> Registry:
    shutil.copytree(template, dest, symlinks=True)
    return Registry(dest)
