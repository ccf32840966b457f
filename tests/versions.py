"""Real model versions made quickly for registry tests: an untrained discriminator exported to ONNX
with a fitted Mahalanobis scorer, laid out and manifested as the trainer does."""

from __future__ import annotations

import numpy as np

from forensics.registry import Registry


def write_version(reg: Registry, seed: int = 0, *, size: int = 16, report_html: bool = False, **manifest) -> str:
    """Reserve, fill and manifest the next version; returns its name. ``report_html`` adds report/eval/report.html."""
    import torch

    from forensics.scoring import fit_mahalanobis
    from trainer.export import export_discriminator
    from trainer.models import build_discriminator

    torch.manual_seed(seed)
    d = build_discriminator(size)
    version, vdir = reg.new_version()
    export_discriminator(d, vdir / "model.onnx", torch.rand(6, 3, size, size))
    with torch.no_grad():
        _, feats = d(torch.rand(64, 3, size, size))
    fit_mahalanobis([f.double().numpy() for f in feats], np.arange(64) % 2).save(vdir / "scorer.npz")
    (vdir / "report").mkdir()
    (vdir / "report" / "metrics.json").write_text("{}")
    if report_html:
        (vdir / "report" / "eval").mkdir()
        (vdir / "report" / "eval" / "report.html").write_text(f"<html><body><h1>report of {version}</h1></body></html>")
    reg.write_manifest(version, {"input_size": size, "metrics": {"clean_video_auc": 0.5}, "thresholds": {}, **manifest})
    return version
