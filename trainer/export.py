"""ONNX export of the discriminator with a parity check against torch on real crops."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from forensics.errors import ModelError
from forensics.runtime import OnnxDiscriminator
from trainer.models import Discriminator, WithChannelStats

PARITY_TOL = 1e-4


def export_discriminator(model: Discriminator, path: str | Path, sample: torch.Tensor) -> dict:
    """Write ``model`` to ``path`` (weights embedded, outputs ``logits, feat0.., std0..``) and check ONNX
    Runtime against torch on ``sample``.

    sample: float32 [N, 3, S, S] in [0, 1], real crops. Raises ModelError if any output differs
    by more than PARITY_TOL. Returns the parity numbers for the manifest.
    """
    path = Path(path)
    model = model.eval()
    # Outputs logits, feat0.. (pooled means) and std0.. (per-channel spatial std, read by forensics.defence).
    net = WithChannelStats(model).eval()
    names = net.output_names()
    example = sample[:2].contiguous()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            net,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=names,
            dynamic_shapes=({0: batch},),
            external_data=False,
            verbose=False,
        )
    program.save(str(path), external_data=False)
    session = OnnxDiscriminator(path)
    with torch.no_grad():
        logits, feats, stds = net(sample)
    out = session.run_float(sample.numpy().astype(np.float32))
    diffs = [float(np.abs(out.logits - logits.numpy()).max())]
    diffs += [float(np.abs(a - b.numpy()).max()) for a, b in zip([*out.features, *out.stds], [*feats, *stds])]
    worst = max(diffs)
    if worst > PARITY_TOL or len(out.features) != len(feats) or len(out.stds) != len(stds):
        path.unlink(missing_ok=True)
        raise ModelError(f"ONNX export parity failed: max abs difference {worst:.2e} > {PARITY_TOL:.0e}")
    return {"max_abs_diff": worst, "per_output": dict(zip(names, diffs)), "checked_on": int(sample.shape[0]),
            "opset": _opset(path), "external_data": False}  # fmt: skip


def _opset(path: Path) -> int | None:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
