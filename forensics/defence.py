"""The second line of defence the detect worker runs: an anomaly score per face crop and per face track.

Runs in the workers, so numpy (+ OpenCV for the squeezers) only. Fitted by the trainer
(``trainer.defence.fit_defence``) and stored beside the model as ``defence.npz`` (hashed by the
manifest like every file of a version). Versions without it fall back to the pooled Mahalanobis
scorer of ``scorer.npz``.

Per crop, a feature vector made of blocks (which blocks a version uses is stored in the file):

- ``pooled``: per-layer squared Mahalanobis distances of the pooled block features (``scorer.npz``);
- ``channel``: per-layer squared Mahalanobis distances of per-channel [mean, std] of every block's
  feature map (ONNX outputs ``feat_l`` and ``std_l``), class means and tied Ledoit-Wolf covariance;
- ``squeeze``: for each small input transform of :mod:`forensics.squeeze`, the absolute change of
  the logit and of the pooled Mahalanobis score (one extra model pass per transform; the worker runs
  the crops and their squeezed copies in one ONNX Runtime call). Issue 8 used four transforms;
  since issue 17 a version ships one by default (``TrainConfig.defence``, chosen by measurement in
  ``bench/defence.py``): about 2x the bare model's cost per face instead of about 5x.

The crop's score is a logistic-regression combination ``bias + features @ weights`` fitted on
validation data (clean and noisy crops against FGSM examples). ``threshold`` flags a crop at the
chosen clean false-positive rate (every validation video weighted equally, out-of-fold scores;
``calibration`` records how and the bootstrap spread of the rate on new videos); ``track_threshold`` flags a face track (or a live window) whose
MEAN crop score is over it, calibrated the same way on clean validation tracks: per-frame
perturbations shift every frame's score a little, and the mean over a track averages the clean
scores' noise away while keeping that shift.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from collections.abc import Sequence

import numpy as np

from forensics.errors import ModelError
from forensics.runtime import Inference
from forensics.scoring import MahalanobisScorer, save_npz
from forensics.squeeze import SQUEEZERS

FORMAT_VERSION = 1
FILE_NAME = "defence.npz"
BLOCKS = ("pooled", "channel", "squeeze")


def channel_features(inference: Inference) -> list[np.ndarray]:
    """Per block: [pooled mean, spatial std] concatenated, float64 [N, 2 C_l]."""
    if len(inference.stds) != len(inference.features):
        raise ModelError(
            "the defence needs the model's per-channel std outputs (std0..) but model.onnx lacks them: "
            "re-export the model"
        )
    return [np.concatenate([m, s], axis=1).astype(np.float64) for m, s in zip(inference.features, inference.stds)]


@dataclasses.dataclass(frozen=True)
class Defence:
    """A fitted detector. Build with ``trainer.defence.fit_defence`` or :meth:`load`.

    blocks           the feature blocks in order, a subset of ``BLOCKS``
    channel          Gaussians on channel features (None without the ``channel`` block)
    squeezers        names in ``forensics.squeeze.SQUEEZERS`` (empty without ``squeeze``)
    pooled_weights   [L], pooled_bias: the pooled Mahalanobis score whose change ``squeeze`` measures
    weights          [F], bias: crop score = bias + features @ weights
    threshold        crop score above it: anomalous crop (clean FPR ``fpr`` on validation crops)
    track_threshold  mean crop score of a track above it: anomalous track (same FPR, validation tracks)
    calibration      how the thresholds were set and the bootstrap spread of their rate on new videos
                     (``trainer.calibration.calibrate_videos``; {} in files from before issue 17)
    """

    blocks: tuple[str, ...]
    channel: MahalanobisScorer | None
    squeezers: tuple[str, ...]
    pooled_weights: np.ndarray
    pooled_bias: float
    weights: np.ndarray
    bias: float
    threshold: float = float("nan")
    track_threshold: float = float("nan")
    fpr: float = float("nan")
    calibration: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def extra_passes(self) -> int:
        """Model passes per crop beyond the plain one."""
        return len(self.squeezers)

    def features(self, pooled: MahalanobisScorer, base: Inference, squeezed: Sequence[Inference]) -> np.ndarray:
        """The crop feature vectors float64 [N, F] from the plain pass and one pass per squeezer."""
        cols = []
        pooled_layers = pooled.layer_scores(base.features)
        if "pooled" in self.blocks:
            cols.append(pooled_layers)
        if "channel" in self.blocks:
            assert self.channel is not None
            cols.append(self.channel.layer_scores(channel_features(base)))
        if "squeeze" in self.blocks:
            if len(squeezed) != len(self.squeezers):
                raise ValueError(f"need one inference per squeezer {self.squeezers}, got {len(squeezed)}")
            base_logit = base.logits.astype(np.float64)
            base_score = self.pooled_bias + pooled_layers @ self.pooled_weights
            for inf in squeezed:
                score = self.pooled_bias + pooled.layer_scores(inf.features) @ self.pooled_weights
                cols.append(np.stack([np.abs(inf.logits - base_logit), np.abs(score - base_score)], axis=1))
        return np.concatenate(cols, axis=1)

    def combine(self, features: np.ndarray) -> np.ndarray:
        """Feature vectors [N, F] -> crop scores float64 [N] (higher = more likely adversarial or OOD)."""
        return self.bias + np.asarray(features, np.float64) @ self.weights

    def score(self, pooled: MahalanobisScorer, base: Inference, squeezed: Sequence[Inference]) -> np.ndarray:
        return self.combine(self.features(pooled, base, squeezed))

    def squeeze(self, images: np.ndarray) -> list[np.ndarray]:
        """The transformed uint8 crops [N,S,S,3], one array per squeezer, to run through the model."""
        return [SQUEEZERS[name](images) for name in self.squeezers]

    def with_weights(self, weights: np.ndarray, bias: float) -> Defence:
        return dataclasses.replace(self, weights=np.asarray(weights, np.float64), bias=float(bias))

    def with_thresholds(self, threshold: float, track_threshold: float, fpr: float,
                        calibration: dict | None = None) -> Defence:  # fmt: skip
        if not (np.isfinite(threshold) and np.isfinite(track_threshold)):
            raise ValueError(f"thresholds must be finite, got {threshold}, {track_threshold}")
        return dataclasses.replace(self, threshold=float(threshold), track_threshold=float(track_threshold),
                                   fpr=float(fpr), calibration=dict(calibration or {}))  # fmt: skip

    # -- file ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``defence.npz`` atomically (no pickles)."""
        arrays: dict[str, np.ndarray] = {
            "format_version": np.array(FORMAT_VERSION, np.int64),
            "blocks": np.array(self.blocks, np.str_),
            "squeezers": np.array(self.squeezers, np.str_).reshape(-1),
            "pooled_weights": self.pooled_weights,
            "pooled_bias": np.array(self.pooled_bias),
            "weights": self.weights,
            "bias": np.array(self.bias),
            "threshold": np.array(self.threshold),
            "track_threshold": np.array(self.track_threshold),
            "fpr": np.array(self.fpr),
            "calibration": np.array(json.dumps(self.calibration), np.str_),
        }
        if self.channel is not None:
            arrays.update({f"channel/{k}": v for k, v in self.channel.to_arrays().items()})
        save_npz(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Defence:
        """Read :meth:`save`'s file. Raises ModelError, with one line, if it is unusable."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                a = {k: npz[k] for k in npz.files}
            return cls._from_arrays(a)
        except ModelError as err:
            raise ModelError(f"defence file {path} is malformed: {err}; re-export the model") from None
        except (OSError, ValueError, KeyError, TypeError, EOFError, AttributeError, zipfile.BadZipFile) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ModelError(f"defence file {path} is unreadable ({reason}); re-export the model") from None

    @classmethod
    def _from_arrays(cls, a: dict[str, np.ndarray]) -> Defence:
        if int(a["format_version"]) != FORMAT_VERSION:
            raise ModelError(f"format version {int(a['format_version'])} is not {FORMAT_VERSION}")
        blocks = tuple(str(b) for b in a["blocks"])
        if not blocks or any(b not in BLOCKS for b in blocks):
            raise ModelError(f"unknown feature blocks {blocks}")
        squeezers = tuple(str(s) for s in a["squeezers"])
        if any(s not in SQUEEZERS for s in squeezers) or (("squeeze" in blocks) != bool(squeezers)):
            raise ModelError(f"squeezers {squeezers} do not fit blocks {blocks}")
        channel = None
        if "channel" in blocks:
            channel = MahalanobisScorer.from_arrays({k[len("channel/"):]: v for k, v in a.items() if k.startswith("channel/")})
        weights = np.asarray(a["weights"], np.float64)
        scalars = {k: float(a[k]) for k in ("pooled_bias", "bias", "threshold", "track_threshold", "fpr")}
        if weights.ndim != 1 or not np.all(np.isfinite(weights)) or not np.isfinite(scalars["bias"]):
            raise ModelError("weights and bias must be finite")
        calibration = json.loads(str(a["calibration"])) if "calibration" in a else {}
        return cls(blocks=blocks, channel=channel, squeezers=squeezers,
                   pooled_weights=np.asarray(a["pooled_weights"], np.float64), weights=weights,
                   calibration=calibration, **scalars)  # fmt: skip
