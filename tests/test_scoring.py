"""forensics.scoring: Mahalanobis distances and Ledoit-Wolf vs scikit-learn, calibration, artifact I/O."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from forensics.errors import ModelError
from forensics.scoring import (
    MahalanobisScorer,
    calibrate_threshold,
    fit_layer_weights,
    fit_mahalanobis,
    ledoit_wolf,
)

sklearn_covariance = pytest.importorskip("sklearn.covariance")
sklearn_linear_model = pytest.importorskip("sklearn.linear_model")


def _features(rng: np.random.Generator, n: int, *, shift: float = 0.0, scale: float = 1.0):
    """Two tapped layers for n examples, labels int [n].

    Layer 0: independent features (D=6). Layer 1: strongly correlated features (D=12, rank-3
    mixing plus small noise). The class means differ; covariances are shared by both classes.
    """
    labels = rng.integers(0, 2, size=n)
    class_means_0 = np.array([[0.0] * 6, [1.5] * 6])
    layer0 = class_means_0[labels] + rng.normal(size=(n, 6)) * np.linspace(0.5, 2.0, 6)
    mixing = np.random.default_rng(123).normal(size=(3, 12))
    class_means_1 = np.stack([np.zeros(12), np.linspace(-1, 1, 12)])
    layer1 = class_means_1[labels] + rng.normal(size=(n, 3)) @ mixing + 0.1 * rng.normal(size=(n, 12))
    return [shift + scale * layer0, shift + scale * layer1], labels


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    features, labels = _features(rng, 400)
    return fit_mahalanobis(features, labels), features, labels


@pytest.mark.parametrize("assume_centered", [False, True])
@pytest.mark.parametrize(
    "shape, correlated", [((50, 8), False), ((300, 20), True), ((15, 40), True), ((30, 1), False)]
)
def test_ledoit_wolf_matches_sklearn(shape, correlated, assume_centered):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape) + 3.0
    if correlated:
        x = x @ rng.normal(size=(shape[1], shape[1]))
    covariance, shrinkage = ledoit_wolf(x, assume_centered=assume_centered)
    want_cov, want_shrinkage = sklearn_covariance.ledoit_wolf(x, assume_centered=assume_centered)
    assert shrinkage == pytest.approx(want_shrinkage, rel=1e-10, abs=1e-14)
    np.testing.assert_allclose(covariance, want_cov, rtol=1e-10, atol=1e-12)
    if shape[1] > 1:
        assert 0 < shrinkage <= 1


def test_layer_scores_are_min_squared_distances_matching_sklearn(fitted):
    scorer, features, labels = fitted
    test_features, _ = _features(np.random.default_rng(2), 100)
    got = scorer.layer_scores(test_features)
    assert got.shape == (100, 2) and got.dtype == np.float64
    for l, (train, test) in enumerate(zip(features, test_features)):
        class_means = np.stack([train[labels == c].mean(axis=0) for c in (0, 1)])
        centred = train - class_means[labels]
        # Tied covariance of class-centred features about 0: assume_centered=True.
        lw = sklearn_covariance.LedoitWolf(assume_centered=True).fit(centred)
        assert scorer.shrinkage[l] == pytest.approx(lw.shrinkage_, rel=1e-10)
        np.testing.assert_allclose(
            scorer.cholesky[l] @ scorer.cholesky[l].T, lw.covariance_, rtol=1e-10, atol=1e-12
        )
        want = np.min([lw.mahalanobis(test - class_means[c]) for c in (0, 1)], axis=0)  # squared
        np.testing.assert_allclose(got[:, l], want, rtol=1e-9)
        # The pooled centred data has mean ~0, so sklearn's default centring barely differs.
        lw_default = sklearn_covariance.LedoitWolf().fit(centred)
        assert scorer.shrinkage[l] == pytest.approx(lw_default.shrinkage_, rel=1e-8)


def test_float32_features_are_scored_in_float64(fitted):
    scorer, _, _ = fitted
    test_features, _ = _features(np.random.default_rng(3), 50)
    as_float32 = [f.astype(np.float32) for f in test_features]
    np.testing.assert_allclose(
        scorer.layer_scores(as_float32),
        scorer.layer_scores([f.astype(np.float32).astype(np.float64) for f in test_features]),
        rtol=0,
    )


def test_default_score_is_mean_of_standardized_layer_scores(fitted):
    scorer, features, _ = fitted
    train_scores = scorer.layer_scores(features)
    standardized = (train_scores - train_scores.mean(axis=0)) / train_scores.std(axis=0)
    np.testing.assert_allclose(scorer.score(features), standardized.mean(axis=1), rtol=1e-9, atol=1e-12)
    assert scorer.score(features).mean() == pytest.approx(0.0, abs=1e-9)


def test_out_of_distribution_points_get_larger_scores(fitted):
    scorer, _, _ = fitted
    rng = np.random.default_rng(4)
    clean, _ = _features(rng, 300)
    shifted, _ = _features(rng, 300, shift=2.0)
    widened, _ = _features(rng, 300, scale=3.0)
    clean_scores = scorer.score(clean)
    threshold = calibrate_threshold(clean_scores, fpr=0.05)
    for ood in (shifted, widened):
        ood_scores = scorer.score(ood)
        assert np.median(ood_scores) > np.quantile(clean_scores, 0.99)
        assert np.mean(ood_scores > threshold) >= 0.9
    # Uncorrelated noise in the correlated layer breaks its structure: huge distance.
    broken = [clean[0], np.random.default_rng(5).normal(size=clean[1].shape) * clean[1].std(axis=0)]
    assert np.min(scorer.layer_scores(broken)[:, 1]) > np.max(scorer.layer_scores(clean)[:, 1])


def test_threshold_gives_requested_false_positive_rate_on_held_out_clean_data(fitted):
    scorer, _, _ = fitted
    validation, _ = _features(np.random.default_rng(6), 4000)
    held_out, _ = _features(np.random.default_rng(7), 4000)
    for fpr in (0.01, 0.05, 0.2):
        threshold = calibrate_threshold(scorer.score(validation), fpr=fpr)
        assert np.mean(scorer.score(validation) > threshold) <= fpr
        observed = np.mean(scorer.score(held_out) > threshold)
        assert abs(observed - fpr) <= 4 * np.sqrt(fpr * (1 - fpr) / 4000)  # ~4 sigma
        calibrated = scorer.with_threshold(threshold, fpr)
        np.testing.assert_array_equal(calibrated.is_anomalous(held_out), scorer.score(held_out) > threshold)


def test_calibrate_threshold_is_an_observed_score_with_at_most_fpr_above_it():
    scores = np.arange(100, dtype=np.float64)
    assert calibrate_threshold(scores, fpr=0.05) == 95.0  # 4 of 100 above
    assert calibrate_threshold(np.array([3.0]), fpr=0.05) == 3.0
    with pytest.raises(ValueError):
        calibrate_threshold(scores, fpr=0.0)
    with pytest.raises(ValueError):
        calibrate_threshold(np.array([1.0, np.nan]))


def test_fit_layer_weights_matches_sklearn_logistic_regression():
    rng = np.random.default_rng(8)
    neg = rng.normal(size=(300, 3)) * [1.0, 5.0, 20.0] + [10.0, 50.0, 200.0]
    pos = rng.normal(size=(100, 3)) * [1.0, 5.0, 20.0] + [11.0, 52.0, 200.0]
    l2 = 0.05
    weights, bias = fit_layer_weights(neg, pos, l2=l2)

    x = np.concatenate([neg, pos])
    y = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
    mean, std = x.mean(axis=0), x.std(axis=0)
    # Ours: balanced mean loss + l2/2 |w|^2; sklearn: |w|^2/2 + C * sum of balanced losses.
    reference = sklearn_linear_model.LogisticRegression(
        C=1.0 / (l2 * len(x)), class_weight="balanced", tol=1e-12, max_iter=10_000
    ).fit((x - mean) / std, y)
    want_weights = reference.coef_[0] / std
    want_bias = reference.intercept_[0] - mean @ want_weights
    np.testing.assert_allclose(weights, want_weights, rtol=1e-5)
    assert bias == pytest.approx(want_bias, rel=1e-5)
    assert weights[0] > 0 and weights[1] > 0 and abs(weights[2]) < weights[1]  # layer 2 carries no signal


def test_fitted_weights_favour_the_layer_that_sees_the_anomaly(fitted):
    scorer, _, _ = fitted
    rng = np.random.default_rng(9)
    clean, _ = _features(rng, 500)
    anomalous, _ = _features(rng, 500)
    anomalous[1] = anomalous[1] + 1.5  # only layer 1 is disturbed
    weights, bias = fit_layer_weights(scorer.layer_scores(clean), scorer.layer_scores(anomalous))
    tuned = scorer.with_layer_weights(weights, bias)
    # In the units the regression sees (pooled standardized scores):
    std = np.concatenate([scorer.layer_scores(clean), scorer.layer_scores(anomalous)]).std(axis=0)
    assert weights[1] * std[1] > 20 * abs(weights[0] * std[0])

    def separation(s):
        a, b = s.score(clean), s.score(anomalous)
        return (b.mean() - a.mean()) / np.sqrt(0.5 * (a.var() + b.var()))

    assert separation(tuned) > separation(scorer)
    assert np.isnan(tuned.threshold)  # new weights need a new threshold


def test_save_and_load_round_trip(fitted, tmp_path):
    scorer, _, _ = fitted
    scorer = scorer.with_threshold(1.25, 0.05)
    path = tmp_path / "scorer.npz"
    scorer.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scorer.npz"]  # no temp file left
    loaded = MahalanobisScorer.load(path)
    assert loaded.layer_names == ("feat0", "feat1")
    assert loaded.threshold == 1.25 and loaded.fpr == 0.05 and loaded.bias == scorer.bias
    np.testing.assert_array_equal(loaded.weights, scorer.weights)
    np.testing.assert_array_equal(loaded.shrinkage, scorer.shrinkage)
    for a, b in zip(loaded.means + loaded.cholesky, scorer.means + scorer.cholesky):
        np.testing.assert_array_equal(a, b)
    test_features, _ = _features(np.random.default_rng(10), 20)
    np.testing.assert_array_equal(loaded.score(test_features), scorer.score(test_features))
    with np.load(path, allow_pickle=False) as npz:
        assert int(npz["format_version"]) == 1


def _rewrite(source, target, *, drop=(), replace=None):
    with np.load(source, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in drop}
    arrays.update(replace or {})
    with open(target, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (lambda src, dst: dst.write_bytes(b"not a scorer"), "unreadable"),
        (lambda src, dst: dst.write_bytes(src.read_bytes()[:200]), "unreadable"),
        (
            lambda src, dst: (
                np.save(dst.with_suffix(".npy"), np.zeros(3)) or dst.with_suffix(".npy").rename(dst)
            ),
            "not an .npz",
        ),
        (lambda src, dst: _rewrite(src, dst, drop=("weights",)), "missing array 'weights'"),
        (lambda src, dst: _rewrite(src, dst, replace={"format_version": np.array(99)}), "format version"),
        (lambda src, dst: _rewrite(src, dst, replace={"cholesky_1": np.ones((12, 12))}), "lower triangular"),
        (
            lambda src, dst: _rewrite(src, dst, replace={"means_0": np.zeros((2, 5))}),
            "'cholesky_0' must be float",
        ),
        (lambda src, dst: _rewrite(src, dst, replace={"weights": np.array([1.0, np.nan])}), "finite"),
        (
            lambda src, dst: _rewrite(src, dst, replace={"layer_names": np.array([{"a": 1}], dtype=object)}),
            "unreadable",
        ),
    ],
    ids=[
        "garbage",
        "truncated",
        "bare-npy",
        "missing-key",
        "version",
        "not-cholesky",
        "shape",
        "nan",
        "pickled",
    ],
)
def test_malformed_scorer_file_raises_one_line_model_error(fitted, tmp_path, corrupt, reason):
    scorer, _, _ = fitted
    good = tmp_path / "good.npz"
    scorer.save(good)
    bad = tmp_path / "bad.npz"
    corrupt(good, bad)
    with pytest.raises(ModelError) as info:
        MahalanobisScorer.load(bad)
    message = str(info.value)
    assert reason in message and str(bad) in message and "re-export" in message
    assert "\n" not in message


def test_missing_scorer_file_raises_model_error(tmp_path):
    with pytest.raises(ModelError, match="unreadable"):
        MahalanobisScorer.load(tmp_path / "absent.npz")


def test_features_from_a_different_model_raise_model_error(fitted):
    scorer, features, _ = fitted
    with pytest.raises(ModelError, match="different versions"):
        scorer.score([features[0], features[1][:, :5]])
    with pytest.raises(ModelError, match="different versions"):
        scorer.score([features[0]])


def test_is_anomalous_needs_a_calibrated_threshold(fitted):
    scorer, features, _ = fitted
    with pytest.raises(ModelError, match="no calibrated threshold"):
        scorer.is_anomalous(features)


def test_fit_rejects_a_missing_class():
    features, _ = _features(np.random.default_rng(11), 20)
    with pytest.raises(ValueError, match="each class"):
        fit_mahalanobis(features, np.zeros(20, dtype=int))


def test_scoring_imports_neither_torch_nor_sklearn_nor_scipy():
    code = (
        "import sys, forensics.scoring; "
        "bad = [m for m in ('torch', 'sklearn', 'scipy') if m in sys.modules]; "
        "print(*bad); sys.exit(1 if bad else 0)"
    )
    project_root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=project_root,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_npz_archive_holds_no_pickled_objects(fitted, tmp_path):
    scorer, _, _ = fitted
    path = tmp_path / "scorer.npz"
    scorer.save(path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    assert {"format_version.npy", "layer_names.npy", "weights.npy", "cholesky_0.npy", "means_1.npy"} <= set(
        names
    )
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
