"""What the detect worker and ``forensics scan`` run: a verified artifact's ONNX session, its
Mahalanobis scorer, its second line of defence (``defence.npz``, issue 8) and its calibrated
thresholds, behind one ``score`` call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

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
    def anomaly_threshold(self) -> float:
        """Crop score above which a crop is anomalous."""
        return self.defence.threshold if self.defence is not None else self.scorer.threshold

    @property
    def track_threshold(self) -> float | None:
        """Mean crop score of a face track (or live window) above which it is anomalous; None: no track rule."""
        return self.defence.track_threshold if self.defence is not None else None

    @property
    def info(self) -> dict:
        """The ``model`` field of alerts."""
        return {"version": self.artifact.version, "sha256": self.artifact.sha256}

    def score(self, images: np.ndarray) -> CropScores:
        """images: uint8 [N, S, S, 3] RGB crops at the model's input size."""
        if images.shape[1:3] != (self.size, self.size):
            raise ValueError(f"crops are {images.shape[1]}x{images.shape[2]}, model {self.artifact.version} wants {self.size}")
        out = self.net.run(images)
        if self.defence is None:
            anomaly = self.scorer.score(out.features)
        else:
            squeezed = [self.net.run(s) for s in self.defence.squeeze(images)]
            anomaly = self.defence.score(self.scorer, out, squeezed)
        return CropScores(out.fake_prob, anomaly, anomaly > self.anomaly_threshold)


def load_model(registry: Registry, version: str | None = None, **kwargs) -> LoadedModel:
    """Verify (sha256 of every file) and load ``version`` (default: current). Raises ModelError."""
    return LoadedModel(registry.load(version), **kwargs)
