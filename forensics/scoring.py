"""Mahalanobis anomaly scorer on the discriminator's tapped features (Lee et al. 2018).

Runs in the detect workers, so it is numpy only (no torch, scipy or scikit-learn).

Per tapped layer l the scorer holds class-conditional means (class 0 REAL, 1 FAKE) and
one covariance shared by both classes ("tied"), estimated from class-centred training
features with Ledoit-Wolf shrinkage, all in float64. A face crop's layer score is its
squared Mahalanobis distance to the nearest class mean (the units of scikit-learn's
``EmpiricalCovariance.mahalanobis``). Layer scores are combined linearly,
``score = bias + weights . layer_scores``: by default the mean of standardized layer
scores, or weights fitted on validation data with :func:`fit_layer_weights`. A crop is
anomalous (suspected adversarial or out-of-distribution) when its score exceeds the
threshold set by :func:`calibrate_threshold` on clean validation scores.

Artifacts are ``.npz`` files written by :meth:`MahalanobisScorer.save` and read by
:meth:`MahalanobisScorer.load` without unpickling.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from forensics.errors import ModelError

FORMAT_VERSION = 1
N_CLASSES = 2  # 0 REAL, 1 FAKE


def ledoit_wolf(x: np.ndarray, *, assume_centered: bool = False) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance of x [N,D]; returns (covariance float64 [D,D], shrinkage).

    Same estimator and conventions as ``sklearn.covariance.ledoit_wolf``: the empirical
    covariance divides by N; ``assume_centered=False`` subtracts the column means first,
    ``True`` uses x as is (the second moment about 0). The result is
    ``(1 - s) * emp_cov + s * mu * I`` with ``mu = trace(emp_cov) / D``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need features [N>=2, D], got shape {x.shape}")
    if not assume_centered:
        x = x - x.mean(axis=0)
    n, d = x.shape
    emp_cov = x.T @ x / n
    if d == 1:
        # One feature: shrinking towards mu * I changes nothing.
        return emp_cov, 0.0
    x2 = x**2
    emp_cov_trace = x2.sum(axis=0) / n
    mu = emp_cov_trace.sum() / d
    # sum_ij <x2_i, x2_j> over columns equals sum over rows of (row sum of x2)^2.
    beta_ = np.sum(x2.sum(axis=1) ** 2)
    delta_ = np.sum((x.T @ x) ** 2) / n**2
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * emp_cov_trace.sum() + d * mu**2) / d
    beta = min(beta, delta)  # never shrink past the target
    shrinkage = 0.0 if beta == 0 else float(beta / delta)
    covariance = (1.0 - shrinkage) * emp_cov
    covariance.flat[:: d + 1] += shrinkage * mu
    return covariance, shrinkage


def _as_layers(features: Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(features, np.ndarray):
        raise TypeError("features must be a sequence of per-layer arrays [N, D_l], not one array")
    return [np.asarray(f, dtype=np.float64) for f in features]


@dataclasses.dataclass(frozen=True)
class MahalanobisScorer:
    """Fitted scorer. Build with :func:`fit_mahalanobis` or :meth:`load`.

    Attributes (all float64):
      layer_names  tuple of L names (``feat0, feat1, ...``, the ONNX output names)
      means        L arrays [2, D_l]: class means, row 0 REAL, row 1 FAKE
      cholesky     L lower-triangular arrays [D_l, D_l]: tied covariance = L @ L.T
      shrinkage    [L] Ledoit-Wolf coefficients (for reports)
      weights      [L], bias: ``score = bias + layer_scores @ weights``
      threshold    a score above it is anomalous; NaN until calibrated
      fpr          the clean false-positive rate the threshold was set for; NaN until calibrated
    """

    layer_names: tuple[str, ...]
    means: tuple[np.ndarray, ...]
    cholesky: tuple[np.ndarray, ...]
    shrinkage: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float = float("nan")
    fpr: float = float("nan")

    @functools.cached_property
    def _whiteners(self) -> tuple[np.ndarray, ...]:
        """L^-1 per layer, float64, from one triangular solve against the identity at first use.

        Scoring then costs a matrix product instead of a solve per batch (3x faster on 256-wide
        layers); in float64 with a shrunk, well-conditioned covariance this matches the
        per-batch solve to ~1e-12 relative.
        """
        return tuple(np.linalg.solve(c, np.eye(c.shape[0])) for c in self.cholesky)

    @property
    def feature_dims(self) -> tuple[int, ...]:
        return tuple(m.shape[1] for m in self.means)

    def _check_features(self, layers: list[np.ndarray]) -> int:
        dims = tuple(f.shape[1] if f.ndim == 2 else -1 for f in layers)
        if dims != self.feature_dims:
            # The model and scorer files of one artifact disagree.
            raise ModelError(
                f"features have per-layer widths {dims} but the scorer expects {self.feature_dims} "
                f"({', '.join(self.layer_names)}): model.onnx and scorer.npz are from different versions"
            )
        n = {f.shape[0] for f in layers}
        if len(n) != 1:
            raise ValueError(f"layers disagree on the number of examples: {sorted(n)}")
        return n.pop()

    def class_distances(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """Squared Mahalanobis distance to each class mean, per layer.

        features: L arrays [N, D_l] (any float dtype; computed in float64).
        Returns float64 [N, L, 2] (last axis: REAL, FAKE).
        """
        layers = _as_layers(features)
        n = self._check_features(layers)
        out = np.empty((n, len(layers), N_CLASSES), dtype=np.float64)
        for l, (f, means, whiten) in enumerate(zip(layers, self.means, self._whiteners)):
            # Columns: every example minus every class mean; one matrix product per layer.
            diffs = (f[None, :, :] - means[:, None, :]).reshape(-1, f.shape[1])
            whitened = whiten @ diffs.T  # L^-1 (x - mu): |.|^2 = d^2
            out[:, l, :] = np.einsum("ij,ij->j", whitened, whitened).reshape(N_CLASSES, n).T
        return out

    def layer_scores(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """Squared Mahalanobis distance to the nearest class mean, per layer: float64 [N, L]."""
        return self.class_distances(features).min(axis=2)

    def score(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """Combined anomaly score float64 [N] (higher = further from the clean training data)."""
        return self.combine(self.layer_scores(features))

    def combine(self, layer_scores: np.ndarray) -> np.ndarray:
        """Layer scores float64 [N, L] -> combined score float64 [N]."""
        return self.bias + np.asarray(layer_scores, dtype=np.float64) @ self.weights

    def is_anomalous(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """bool [N]: score above the calibrated threshold. Raises ModelError if uncalibrated."""
        if not np.isfinite(self.threshold):
            raise ModelError(
                "the Mahalanobis scorer has no calibrated threshold: re-run the trainer's calibration"
            )
        return self.score(features) > self.threshold

    def with_layer_weights(self, weights: np.ndarray, bias: float) -> MahalanobisScorer:
        """A copy combining layers with ``weights`` [L] and ``bias`` (threshold reset: recalibrate)."""
        weights = np.asarray(weights, dtype=np.float64)
        if (
            weights.shape != (len(self.layer_names),)
            or not np.all(np.isfinite(weights))
            or not np.isfinite(bias)
        ):
            raise ValueError(
                f"need {len(self.layer_names)} finite weights and a finite bias, got {weights!r}, {bias!r}"
            )
        return dataclasses.replace(
            self, weights=weights, bias=float(bias), threshold=float("nan"), fpr=float("nan")
        )

    def with_threshold(self, threshold: float, fpr: float) -> MahalanobisScorer:
        """A copy whose :meth:`is_anomalous` uses ``threshold`` (set for clean false-positive rate ``fpr``)."""
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        return dataclasses.replace(self, threshold=float(threshold), fpr=float(fpr))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The named arrays of the ``.npz`` format (also embedded, prefixed, in ``defence.npz``)."""
        arrays: dict[str, np.ndarray] = {
            "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
            "layer_names": np.array(self.layer_names, dtype=np.str_),
            "shrinkage": self.shrinkage,
            "weights": self.weights,
            "bias": np.array(self.bias, dtype=np.float64),
            "threshold": np.array(self.threshold, dtype=np.float64),
            "fpr": np.array(self.fpr, dtype=np.float64),
        }
        for l, (means, chol) in enumerate(zip(self.means, self.cholesky)):
            arrays[f"means_{l}"] = means
            arrays[f"cholesky_{l}"] = chol
        return arrays

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the scorer to ``path`` (an ``.npz``) atomically: a reader never sees half a file."""
        save_npz(path, self.to_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MahalanobisScorer:
        """Read a scorer written by :meth:`save`. Raises ModelError, with one line, if it is unusable."""
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ModelError("it is a bare array, not an .npz archive")
            with loaded as npz:
                arrays = {k: npz[k] for k in npz.files}
            return cls.from_arrays(arrays)
        except ModelError as err:
            raise ModelError(f"scorer file {path} is malformed: {err}; re-export the model") from None
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
            # allow_pickle=False turns an object array into ValueError: never unpickled.
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ModelError(f"scorer file {path} is unreadable ({reason}); re-export the model") from None

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> MahalanobisScorer:
        """The scorer of :meth:`to_arrays`' arrays; raises ModelError saying what is wrong."""
        def get(key: str) -> np.ndarray:
            if key not in arrays:
                raise ModelError(f"missing array {key!r}")
            return arrays[key]

        version = get("format_version")
        if version.shape != () or version.dtype.kind not in "iu" or int(version) != FORMAT_VERSION:
            raise ModelError(f"format version {version!r} is not {FORMAT_VERSION}")
        names = get("layer_names")
        if names.ndim != 1 or names.dtype.kind != "U" or names.size == 0:
            raise ModelError("layer_names must be a non-empty list of strings")
        n_layers = names.size

        def floats(key: str, shape: tuple[int, ...]) -> np.ndarray:
            a = get(key)
            if a.dtype.kind != "f" or a.shape != shape:
                raise ModelError(f"{key!r} must be float {shape}, got {a.dtype} {a.shape}")
            return a.astype(np.float64)

        means, chols = [], []
        for l in range(n_layers):
            m = get(f"means_{l}")
            if m.ndim != 2 or m.shape[0] != N_CLASSES:
                raise ModelError(f"'means_{l}' must be [{N_CLASSES}, D], got {m.shape}")
            d = m.shape[1]
            m = floats(f"means_{l}", (N_CLASSES, d))
            c = floats(f"cholesky_{l}", (d, d))
            if not np.all(np.isfinite(m)) or not np.all(np.isfinite(c)):
                raise ModelError(f"layer {l} holds non-finite values")
            if np.any(np.triu(c, 1)) or not np.all(np.diag(c) > 0):
                raise ModelError(f"'cholesky_{l}' is not lower triangular with a positive diagonal")
            means.append(m)
            chols.append(c)
        weights = floats("weights", (n_layers,))
        bias = floats("bias", ())
        if not np.all(np.isfinite(weights)) or not np.isfinite(bias):
            raise ModelError("weights and bias must be finite")
        return cls(
            layer_names=tuple(str(s) for s in names),
            means=tuple(means),
            cholesky=tuple(chols),
            shrinkage=floats("shrinkage", (n_layers,)),
            weights=weights,
            bias=float(bias),
            threshold=float(floats("threshold", ())),
            fpr=float(floats("fpr", ())),
        )


def save_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to the ``.npz`` at ``path`` atomically (no pickles): a reader never sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; workers may run as another user
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def fit_mahalanobis(
    features: Sequence[np.ndarray], labels: np.ndarray, layer_names: Sequence[str] | None = None
) -> MahalanobisScorer:
    """Fit class means and a tied Ledoit-Wolf covariance per layer, on clean training features.

    features: L arrays [N, D_l] (any float dtype; fitted in float64); labels int [N], 0 REAL, 1 FAKE;
    layer_names default to ``feat0, feat1, ...``. The covariance is that of the class-centred
    features about zero (each row minus its class mean), divided by N, i.e. sklearn's
    ``LedoitWolf(assume_centered=True)`` on the centred features.

    The combination defaults to the mean of standardized layer scores, standardized by the
    mean and standard deviation of each layer's scores on these training features.
    """
    layers = _as_layers(features)
    labels = np.asarray(labels)
    if not layers:
        raise ValueError("need at least one feature layer")
    if labels.ndim != 1 or not np.all(np.isin(labels, (0, 1))):
        raise ValueError("labels must be [N] with values 0 (REAL) or 1 (FAKE)")
    for f in layers:
        if f.ndim != 2 or f.shape[0] != labels.shape[0]:
            raise ValueError(f"each layer must be [N={labels.shape[0]}, D], got {f.shape}")
        if not np.all(np.isfinite(f)):
            raise ValueError("features contain NaN or inf")
    counts = np.bincount(labels.astype(np.int64), minlength=N_CLASSES)
    if np.any(counts < 2):
        raise ValueError(f"need at least 2 examples of each class, got REAL={counts[0]} FAKE={counts[1]}")
    names = tuple(layer_names) if layer_names is not None else tuple(f"feat{i}" for i in range(len(layers)))
    if len(names) != len(layers):
        raise ValueError(f"{len(names)} layer names for {len(layers)} layers")

    means, chols, shrinkages = [], [], []
    for f in layers:
        class_means = np.stack([f[labels == c].mean(axis=0) for c in range(N_CLASSES)])
        centred = f - class_means[labels]
        covariance, shrinkage = ledoit_wolf(centred, assume_centered=True)
        try:
            chol = np.linalg.cholesky(covariance)
        except np.linalg.LinAlgError:
            # Only when shrinkage is 0 and the features are rank-deficient (e.g. dead channels).
            raise ValueError(
                f"tied covariance of a {f.shape[1]}-wide layer is singular: features are degenerate"
            ) from None
        means.append(class_means)
        chols.append(chol)
        shrinkages.append(shrinkage)

    n_layers = len(layers)
    scorer = MahalanobisScorer(
        layer_names=names,
        means=tuple(means),
        cholesky=tuple(chols),
        shrinkage=np.array(shrinkages, dtype=np.float64),
        weights=np.full(n_layers, 1.0 / n_layers),
        bias=0.0,
    )
    train_scores = scorer.layer_scores(layers)
    mean = train_scores.mean(axis=0)
    std = np.maximum(train_scores.std(axis=0), 1e-12)
    weights = 1.0 / (n_layers * std)
    return scorer.with_layer_weights(weights, -float(mean @ weights))


def fit_layer_weights(
    layer_scores_neg: np.ndarray, layer_scores_pos: np.ndarray, *, l2: float = 1e-2, max_iter: int = 50
) -> tuple[np.ndarray, float]:
    """Logistic-regression weights that separate anomalous from clean layer scores.

    layer_scores_neg float [N0, L]: clean validation examples (label 0);
    layer_scores_pos float [N1, L]: adversarial or out-of-distribution examples (label 1).
    Fits ``P(anomalous) = sigmoid(bias + scores @ weights)`` by Newton's method (IRLS) on
    standardized scores with an L2 penalty ``l2 * |w|^2 / 2`` on the weights (not the bias),
    classes weighted equally, then folds the standardization back in.

    Returns (weights float64 [L], bias float) in raw layer-score units, for
    :meth:`MahalanobisScorer.with_layer_weights`.
    """
    neg = np.asarray(layer_scores_neg, dtype=np.float64)
    pos = np.asarray(layer_scores_pos, dtype=np.float64)
    if neg.ndim != 2 or pos.ndim != 2 or neg.shape[1] != pos.shape[1] or not len(neg) or not len(pos):
        raise ValueError(f"need non-empty [N, L] arrays with equal L, got {neg.shape} and {pos.shape}")
    x = np.concatenate([neg, pos])
    y = np.concatenate([np.zeros(len(neg)), np.ones(len(pos))])
    # Balanced: each class carries half the total weight whatever the counts.
    sample_w = np.concatenate([np.full(len(neg), 0.5 / len(neg)), np.full(len(pos), 0.5 / len(pos))])
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-12)
    a = np.column_stack([np.ones(len(x)), (x - mean) / std])
    penalty = np.full(a.shape[1], l2)
    penalty[0] = 0.0

    def objective(theta: np.ndarray) -> float:
        z = a @ theta
        # log(1 + e^z) - y z, without overflow
        return float(sample_w @ (np.logaddexp(0.0, z) - y * z) + 0.5 * penalty @ theta**2)

    theta = np.zeros(a.shape[1])
    current = objective(theta)
    for _ in range(max_iter):
        p = 0.5 * (1.0 + np.tanh(0.5 * (a @ theta)))  # sigmoid without overflow warnings
        gradient = a.T @ (sample_w * (p - y)) + penalty * theta
        hessian = (a * (sample_w * p * (1 - p))[:, None]).T @ a + np.diag(penalty)
        hessian.flat[:: a.shape[1] + 1] += 1e-12  # keeps the solve defined on separable data
        step = np.linalg.solve(hessian, gradient)
        # Halve the Newton step until the convex objective does not go up.
        for _ in range(30):
            candidate = objective(theta - step)
            if candidate <= current:
                break
            step = step / 2
        else:
            break
        theta, current = theta - step, candidate
        if np.max(np.abs(step)) < 1e-10:
            break
    weights = theta[1:] / std
    return weights, float(theta[0] - mean @ weights)


def calibrate_threshold(clean_scores: np.ndarray, fpr: float = 0.05) -> float:
    """Score threshold flagging at most a share ``fpr`` of clean validation examples.

    Returns the ``1 - fpr`` empirical quantile of ``clean_scores`` float [N] (numpy's
    ``"higher"`` method, an observed score), so ``mean(clean_scores > threshold) <= fpr``
    on these scores; on fresh clean data the false-positive rate is ``fpr`` up to sampling
    error of order ``sqrt(fpr * (1 - fpr) / N)``.
    """
    scores = np.asarray(clean_scores, dtype=np.float64).ravel()
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        raise ValueError("need at least one finite clean score")
    return float(np.quantile(scores, 1.0 - fpr, method="higher"))
