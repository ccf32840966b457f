"""What the detect worker and ``forensics scan`` run: a verified artifact's ONNX session, its
Mahalanobis scorer and its calibrated thresholds, behind one ``score`` call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from forensics.errors import ModelError
from forensics.registry import Artifact, Registry
from forensics.runtime import OnnxDiscriminator
from forensics.scoring import MahalanobisScorer


@dataclass
class CropScores:
    fake_prob: np.ndarray  # float64 [N], calibrated decision at thresholds["frame_prob"]
    anomaly: np.ndarray  # float64 [N], combined Mahalanobis score
    anomalous: np.ndarray  # bool [N], anomaly > scorer threshold


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
        th = artifact.manifest.get("thresholds", {})
        try:
            self.frame_threshold = float(th["frame_prob"])
            self.video_threshold = float(th["video_prob"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"model {artifact.version}: manifest lacks calibrated thresholds") from None
        self.size = artifact.input_size

    @property
    def info(self) -> dict:
        """The ``model`` field of alerts."""
        return {"version": self.artifact.version, "sha256": self.artifact.sha256}

    def score(self, images: np.ndarray) -> CropScores:
        """images: uint8 [N, S, S, 3] RGB crops at the model's input size."""
        if images.shape[1:3] != (self.size, self.size):
            raise ValueError(f"crops are {images.shape[1]}x{images.shape[2]}, model {self.artifact.version} wants {self.size}")
        out = self.net.run(images)
        anomaly = self.scorer.score(out.features)
        return CropScores(out.fake_prob, anomaly, anomaly > self.scorer.threshold)


def load_model(registry: Registry, version: str | None = None, **kwargs) -> LoadedModel:
    """Verify (sha256 of every file) and load ``version`` (default: current). Raises ModelError."""
    return LoadedModel(registry.load(version), **kwargs)
