"""After training: export to ONNX (with a parity check), save the scorer, the defence and the torch
weights, write report/metrics.json and the quick robustness report, then the manifest; register the
version in the model registry and promote it when asked (the first model always is).

The functions take the :class:`trainer.train.Trainer` that trained the model (its config, data
splits, history and timings).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from forensics.registry import Registry
from forensics.runtime import OnnxDiscriminator
from forensics.scoring import MahalanobisScorer
from trainer.evaluate import run_evaluation
from trainer.export import export_discriminator
from trainer.metrics import jsonable
from trainer.models import Discriminator, WithChannelStats, detector_config
from trainer.report import write_report

if TYPE_CHECKING:
    from trainer.train import Trainer


def register(trainer: Trainer, D: Discriminator, scorer: MahalanobisScorer, metrics: dict, thresholds: dict) -> dict[str, Any]:
    """Export, save and register the trained model as a new version (promoted if asked, or if first)."""
    cfg = trainer.cfg
    reg = Registry(cfg.models_dir)
    version, vdir = reg.new_version()
    sample = trainer.val_x[: min(64, len(trainer.val_x))]
    parity = export_discriminator(D, vdir / "model.onnx", sample)
    scorer.save(vdir / "scorer.npz")
    trainer.defences[cfg.defence].save(vdir / "defence.npz")
    # torch weights for white-box evaluation and saliency (trainer only; workers use the ONNX model).
    torch.save({"state_dict": D.state_dict(), **detector_config(D)}, vdir / "discriminator.pt")
    # The generator, for the report's sample-fidelity (SSIM) figures.
    torch.save({"state_dict": trainer.G.state_dict(), "image_size": cfg.image_size, "latent_dim": trainer.G.latent_dim},
               vdir / "generator.pt")  # fmt: skip
    (vdir / "report").mkdir(exist_ok=True)
    report = {
        "version": version,
        "history": trainer.history,
        "test": metrics,
        "thresholds": thresholds,
        "parity": parity,
        "data": {
            "roots": [str(p) for p in cfg.data],
            "fingerprint": trainer.fingerprint,
            **{f"{k}_videos": len(v.videos) for k, v in trainer.crops.items()},
            **{f"{k}_crops": len(v) for k, v in trainer.crops.items()},
            "failed_videos": trainer.failed_videos,
            "provenance": trainer.provenance,
        },
        "config": asdict(cfg),
        "timings": trainer.timings,
        "world_size": trainer.dist.world,
    }
    (vdir / "report" / "metrics.json").write_text(json.dumps(jsonable(report), indent=1))
    if cfg.evaluate:
        write_eval_report(trainer, version, vdir, D, scorer, thresholds)
    adv = metrics["adversarially_trained"]
    manifest = reg.write_manifest(
        version,
        {
            "input_size": cfg.image_size,
            "architecture": cfg.arch,
            "provenance": trainer.provenance,
            "preprocessing": {
                "input": "float32 [N,3,S,S] RGB in [0,1]",
                "normalization": "inside the model: (x - 0.5) / 0.5",
                "crop": {"detector": trainer.crop_cfg.detector, "margin": trainer.crop_cfg.margin, "square": True},
            },
            "outputs": WithChannelStats(D).output_names(),
            "feature_dims": list(D.feature_dims),
            "data_fingerprint": trainer.fingerprint,
            "metrics": jsonable({
                "clean_frame_auc": adv["clean_frame_auc"],
                "clean_video_auc": adv["clean_video_auc"],
                "pgd_success": {k: v["success_rate"] for k, v in adv["pgd"].items()},
                "ood_detection": metrics["ood_detection"]["all"],
            }),
            "thresholds": thresholds,
            "calibration": jsonable(metrics.get("calibration")),
            "parent": cfg.parent if cfg.parent is not None else reg.current(),
            "onnx": {"external_data": False, "opset": parity.get("opset")},
            "torch_weights": "discriminator.pt",
            "generator_weights": "generator.pt",
        },
    )
    promoted = False
    if cfg.promote or reg.current() is None:
        reg.promote(version, reason="first model" if reg.current() is None else "--promote")
        promoted = True
    trainer.log.info("model registered", version=version, promoted=promoted, path=str(vdir))
    return {"version": version, "path": str(vdir), "promoted": promoted, "manifest": manifest,
            "metrics": report["test"], "thresholds": thresholds}  # fmt: skip


# The report written at the end of training stays within minutes: the Square attack keeps its
# 5,000-query budget on fewer crops, the converged adaptive attack runs on fewer frames and tracks.
TRAIN_REPORT = {"square_images": 8, "square_tracks": 1, "adaptive_frames": 16, "adaptive_tracks": 4}


def write_eval_report(trainer: Trainer, version: str, vdir: Path, D: Discriminator, scorer: MahalanobisScorer,
                      thresholds: dict) -> None:  # fmt: skip
    """The evaluation protocol of `forensics eval` in quick mode, before the manifest is written."""
    t0 = time.monotonic()
    onnx = OnnxDiscriminator(vdir / "model.onnx", intra_op_threads=1)
    result = run_evaluation(D, lambda xs: onnx.run_float(xs).logits, scorer, thresholds, trainer.crops["test"],
                            seed=trainer.cfg.seed, quick=True, generator=trainer.G.eval(),
                            defences=trainer.defences, shipped_defence=trainer.cfg.defence,
                            crop_detector=trainer.cfg.crop_detector, **{**TRAIN_REPORT, **trainer.cfg.report_budget})  # fmt: skip
    result["version"] = version
    write_report(result, trainer.history, vdir / "report" / "eval")
    trainer.timings["eval_s"] = time.monotonic() - t0
