"""AUC, log loss, calibration bins and ECE: hand-computed values and scikit-learn's numbers."""

from __future__ import annotations

import numpy as np
import pytest

from shopaug.eval.calibration import (
    bootstrap_metric,
    expected_calibration_error,
    log_losses,
    normalized_entropy,
    reliability_bins,
    reliability_chart,
    roc_auc,
    summarize_probabilities,
)


def _rare_clicks(seed: int = 0, n: int = 3000):
    rng = np.random.default_rng(seed)
    p = rng.beta(0.5, 80, n)  # mean about 0.6 %, like ad CTRs
    y = (rng.random(n) < p * 1.5).astype(int)  # under-predicting model
    return y, p


def test_hand_computed_values() -> None:
    y = np.array([0, 0, 1, 1, 0])
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.4])
    # pairs (pos, neg): 0.35 beats 0.1, loses to 0.4 twice; 0.8 beats all 3 -> 4 / 6
    assert roc_auc(labels=y, scores=p) == pytest.approx(4 / 6)
    assert roc_auc(labels=np.array([0, 1]), scores=np.array([0.5, 0.5])) == 0.5
    expected = -np.log([0.9, 0.6, 0.35, 0.8, 0.6])
    np.testing.assert_allclose(log_losses(labels=y, probabilities=p), expected)
    # two uniform bins: [0, 0.5): 4 rows, mean p 0.3125, rate 0.25; [0.5, 1]: p 0.8, rate 1
    table = reliability_bins(labels=y, probabilities=p, bins=2, strategy="uniform")
    np.testing.assert_allclose(table.predicted, [0.3125, 0.8])
    np.testing.assert_allclose(table.observed, [0.25, 1.0])
    assert table.counts.tolist() == [4, 1]
    ece = expected_calibration_error(labels=y, probabilities=p, bins=2, strategy="uniform")
    assert ece == pytest.approx(0.8 * 0.0625 + 0.2 * 0.2)


def test_same_numbers_as_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    calibration = pytest.importorskip("sklearn.calibration")
    y, p = _rare_clicks()
    assert roc_auc(labels=y, scores=p) == pytest.approx(metrics.roc_auc_score(y, p), abs=1e-12)
    assert log_losses(labels=y, probabilities=p).mean() == pytest.approx(
        metrics.log_loss(y, p), rel=1e-12
    )
    for strategy in ("quantile", "uniform"):
        observed, predicted = calibration.calibration_curve(y, p, n_bins=10, strategy=strategy)
        table = reliability_bins(labels=y, probabilities=p, bins=10, strategy=strategy)
        np.testing.assert_allclose(table.observed, observed)
        np.testing.assert_allclose(table.predicted, predicted)


def test_calibration_error_sees_a_miscalibrated_model() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.0, 0.05, 20_000)
    y = (rng.random(p.size) < p).astype(int)
    calibrated = expected_calibration_error(labels=y, probabilities=p)
    doubled = expected_calibration_error(labels=y, probabilities=2 * p)
    assert calibrated < 0.003 < doubled


def test_bootstrap_interval_skips_undefined_resamples() -> None:
    y, p = _rare_clicks(n=400)
    low, high = bootstrap_metric(
        lambda a, b: roc_auc(labels=a, scores=b), labels=y, probabilities=p, n_resamples=200
    )
    assert low < roc_auc(labels=y, scores=p) < high
    with pytest.raises(ValueError, match="one click and one non-click"):
        roc_auc(labels=np.zeros(3, dtype=int), scores=np.ones(3))
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        log_losses(labels=np.array([2]), probabilities=np.array([0.5]))


def test_reliability_chart_is_svg_with_one_line_per_model() -> None:
    y, p = _rare_clicks()
    table = reliability_bins(labels=y, probabilities=p)
    chart = reliability_chart({"model a": table, "model b": table}, title="Reliability")
    assert chart.startswith('<svg data-plot="reliability"')
    assert "model a" in chart and "model b" in chart and "<title>Reliability</title>" in chart


def test_summary_holds_each_metric_inside_its_interval() -> None:
    y, p = _rare_clicks(n=1000)
    summary = summarize_probabilities(labels=y, probabilities=p, n_resamples=100, seed=2)
    assert summary["auc"]["mean"] == roc_auc(labels=y, scores=p)
    for name in ("auc", "log_loss", "ece"):
        low, high = summary[name]["ci95"]
        assert low <= summary[name]["mean"] <= high
    assert summary["mean_predicted"] == pytest.approx(p.mean())


def test_normalized_entropy_against_hand_computed_values() -> None:
    y = np.array([0, 0, 0, 1])
    p = np.array([0.1, 0.2, 0.1, 0.6])
    model = -(np.log(0.9) * 2 + np.log(0.8) + np.log(0.6)) / 4
    constant = -(3 * np.log(0.75) + np.log(0.25)) / 4
    assert normalized_entropy(labels=y, probabilities=p, base_rate=0.25) == pytest.approx(
        model / constant
    )
    # the base rate itself scores exactly 1; its interval is [1, 1]
    summary = summarize_probabilities(
        labels=y, probabilities=np.full(4, 0.25), n_resamples=50, base_rate=0.25
    )
    assert summary["normalized_entropy"] == {"mean": 1.0, "ci95": [1.0, 1.0]}
    with pytest.raises(ValueError, match="base_rate"):
        normalized_entropy(labels=y, probabilities=p, base_rate=0.0)
