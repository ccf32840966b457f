"""What the detect worker and ``forensics scan`` run: a verified artifact's ONNX session, its
Mahalanobis scorer, its second line of defence (``defence.npz``, issue 8) and its calibrated
thresholds, behind one ``score`` call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from forensics import provenance
from forensics.defence import FILE_NAME as DEFENCE_FILE
from forensics.defence import Defence
from forensics.errors import ModelError
from forensics.registry import Artifact, Registry
from forensics.runtime import OnnxDiscriminator
from forensics.scoring import MahalanobisScorer


@dataclass
class CropScores:
    fake_prob: np.ndarray  # float64 [N], calibrated decision at thresholds["frame_prob"]
    anomaly: np.ndarray  # float64 [N], the defence's crop score (pooled Mahalanobis score without defence.npz)
    anomalous: np.ndarray  # bool [N], anomaly > its crop threshold


class LoadedModel:
    """A verified artifact, ready to score uint8 crops."""

    def __init__(self, artifact: Artifact, *, providers: Sequence[str] = ("CPUExecutionProvider",),
                 intra_op_threads: int = 0):  # fmt: skip
        self.artifact = artifact
        # The scorer's matrix products are small: BLAS threads only fight ONNX Runtime's for the
        # cores (scoring ran at 0.37x the bare model on 2 cores, 0.93x with one BLAS thread).
        threadpool_limits(limits=1, user_api="blas")
        self.net = OnnxDiscriminator(artifact.model_path, providers=providers, intra_op_threads=intra_op_threads)
        self.scorer = MahalanobisScorer.load(artifact.scorer_path)
        if tuple(self.net.feature_names) != tuple(self.scorer.layer_names):
            raise ModelError(
                f"model {artifact.version}: ONNX outputs {self.net.feature_names} do not match the scorer's "
                f"layers {self.scorer.layer_names}"
            )
        # Versions trained before issue 8 have no defence.npz: they keep the pooled Mahalanobis score.
        self.defence: Defence | None = None
        if DEFENCE_FILE in artifact.manifest.get("files", {}):
            self.defence = Defence.load(artifact.path / DEFENCE_FILE)
            if "channel" in self.defence.blocks and len(self.net.std_names) != len(self.net.feature_names):
                raise ModelError(f"model {artifact.version}: defence.npz needs std0.. outputs that model.onnx lacks")
        th = artifact.manifest.get("thresholds", {})
        try:
            self.frame_threshold = float(th["frame_prob"])
            self.video_threshold = float(th["video_prob"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"model {artifact.version}: manifest lacks calibrated thresholds") from None
        self.size = artifact.input_size

    @property
    def crop_detector(self) -> str | None:
        """The face detector the model's training crops were made with (manifest), None if not recorded."""
        crop = self.artifact.manifest.get("preprocessing", {}).get("crop", {})
        return str(crop["detector"]) if crop.get("detector") else None

    @property
    def anomaly_threshold(self) -> float:
        """Crop score above which a crop is anomalous."""
        return self.defence.threshold if self.defence is not None else self.scorer.threshold

    @property
    def track_threshold(self) -> float | None:
        """Mean crop score of a face track (or live window) above which it is anomalous; None: no track rule."""
        return self.defence.track_threshold if self.defence is not None else None

    @property
    def info(self) -> dict:
        """The ``model`` field of alerts and results: version, sha256 and the synthetic-only flag."""
        return {"version": self.artifact.version, "sha256": self.artifact.sha256,
                "synthetic_only": provenance.synthetic_only(self.provenance)}  # fmt: skip

    @property
    def trained_on(self) -> dict | None:
        """The ``trained_on`` field of verdicts: data, fake sources, input size, architecture (None if not recorded)."""
        return provenance.alert_fields(self.provenance)["trained_on"]

    @property
    def provenance(self) -> dict | None:
        """The manifest's record of what this version was trained on (None for versions from before it was kept)."""
        return self.artifact.manifest.get("provenance")

    @property
    def warning(self) -> str | None:
        """One line to print at start-up when verdicts of this model on real video mean nothing (synthetic-only)."""
        return provenance.warning_line(self.artifact.version, self.provenance)

    def score(self, images: np.ndarray) -> CropScores:
        """images: uint8 [N, S, S, 3] RGB crops at the model's input size."""
        if images.shape[1:3] != (self.size, self.size):
            raise ValueError(f"crops are {images.shape[1]}x{images.shape[2]}, model {self.artifact.version} wants {self.size}")
        if self.defence is None or not self.defence.squeezers:
            out = self.net.run(images)
            anomaly = self.scorer.score(out.features) if self.defence is None else self.defence.score(self.scorer, out, [])
        else:
            # The crops and their squeezed copies in one ONNX Runtime call.
            out, *squeezed = self.net.run(np.concatenate([images, *self.defence.squeeze(images)])).split(len(images))
            anomaly = self.defence.score(self.scorer, out, squeezed)
        return CropScores(out.fake_prob, anomaly, anomaly > self.anomaly_threshold)


def load_model(registry: Registry, version: str | None = None, **kwargs) -> LoadedModel:
    """Verify (sha256 of every file) and load ``version`` (default: current). Raises ModelError."""
    return LoadedModel(registry.load(version), **kwargs)
