"""Confidence intervals and paired tests against hand-computed values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from shopaug.eval.significance import (
    PairedTestResult,
    confidence_interval,
    fold_summary,
    paired_test,
)


def test_confidence_interval_by_hand_and_against_scipy() -> None:
    values = [0.1, 0.2, 0.3]
    # mean 0.2, sample sd 0.1, se 0.1/sqrt(3) = 0.0577350; t_{0.975, df=2} = 4.302653
    # half width = 4.302653 * 0.0577350 = 0.2484138
    low, high = confidence_interval(values)
    assert low == pytest.approx(0.2 - 0.2484138, abs=1e-6)
    assert high == pytest.approx(0.2 + 0.2484138, abs=1e-6)
    expected = stats.t.interval(0.95, df=2, loc=0.2, scale=stats.sem(values))
    assert (low, high) == pytest.approx(expected)
    # A lower confidence gives a narrower interval: t_{0.95, df=2} = 2.919986
    _, high90 = confidence_interval(values, confidence=0.90)
    assert high90 - 0.2 == pytest.approx(2.919986 * 0.1 / math.sqrt(3), abs=1e-6)


def test_confidence_interval_degenerate_inputs() -> None:
    assert confidence_interval([0.4, 0.4, 0.4]) == (pytest.approx(0.4), pytest.approx(0.4))
    low, high = confidence_interval([0.4])
    assert math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="empty"):
        confidence_interval([])
    with pytest.raises(ValueError, match="NaN"):
        confidence_interval([0.1, float("nan")])
    with pytest.raises(ValueError, match="confidence must be in"):
        confidence_interval([0.1, 0.2], confidence=95)


def test_fold_summary_shape_for_metrics_json() -> None:
    summary = fold_summary([0.1, 0.2, 0.3])
    assert set(summary) == {"mean", "ci95", "per_fold"}
    assert summary["mean"] == pytest.approx(0.2)
    assert summary["ci95"] == pytest.approx([0.2 - 0.2484138, 0.2 + 0.2484138], abs=1e-6)
    assert summary["per_fold"] == [0.1, 0.2, 0.3]
    assert all(type(value) is float for value in summary["per_fold"])  # JSON-friendly
    assert fold_summary(np.array([0.7]))["ci95"] == [None, None]


def test_paired_t_by_hand_and_against_scipy() -> None:
    a = np.array([3.0, 5.0, 7.0])
    b = np.array([2.0, 3.0, 4.0])
    # differences 1, 2, 3: mean 2, sd 1, t = 2 / (1/sqrt(3)) = 3.4641016, df = 2
    # two-sided p = 2 * (1 - T_2(3.4641016)) = 0.0741799
    result = paired_test(a, b)
    assert isinstance(result, PairedTestResult)
    assert result.statistic == pytest.approx(2 * math.sqrt(3))
    assert result.p_value == pytest.approx(0.0741799, abs=1e-6)
    assert result.mean_difference == pytest.approx(2.0)
    assert result.test == "paired t"
    reference = stats.ttest_rel(a, b)
    assert result.p_value == pytest.approx(reference.pvalue)
    # Swapping the systems flips the sign, not the p-value.
    swapped = paired_test(b, a)
    assert swapped.statistic == pytest.approx(-result.statistic)
    assert swapped.p_value == pytest.approx(result.p_value)


def test_wilcoxon_against_scipy() -> None:
    rng = np.random.default_rng(3)
    a = rng.random(30)
    b = a - 0.05 + 0.1 * rng.random(30)
    result = paired_test(a, b, method="wilcoxon")
    reference = stats.wilcoxon(a, b)
    assert result.test == "wilcoxon"
    assert result.statistic == pytest.approx(reference.statistic)
    assert result.p_value == pytest.approx(reference.pvalue)


def _scipy_paired_permutation(a: np.ndarray, b: np.ndarray, n_resamples: float) -> float:
    def mean_difference(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        return np.mean(x - y, axis=axis)

    result = stats.permutation_test(
        (a, b),
        mean_difference,
        permutation_type="samples",
        n_resamples=n_resamples,
        alternative="two-sided",
        random_state=0,
    )
    return float(result.pvalue)


def test_exact_permutation_test_by_hand_and_against_scipy() -> None:
    a = np.array([0.50, 0.40, 0.90, 0.30])
    b = np.array([0.40, 0.35, 0.80, 0.30])
    # differences 0.1, 0.05, 0.1, 0: of the 16 sign patterns only those giving the three
    # non-zero differences one common sign reach |mean| >= 0.0625: 2 * 2 = 4 -> p = 4/16.
    result = paired_test(a, b, method="permutation")
    assert result.p_value == pytest.approx(0.25)
    assert result.statistic == pytest.approx(0.0625)
    assert result.test == "permutation"
    assert result.p_value == pytest.approx(_scipy_paired_permutation(a, b, np.inf))

    rng = np.random.default_rng(5)
    a = rng.random(12)
    b = a + rng.normal(0.05, 0.1, size=12)  # 2**12 = 4096 <= 10_000: exact enumeration
    assert paired_test(a, b, method="permutation").p_value == pytest.approx(
        _scipy_paired_permutation(a, b, np.inf)
    )


def test_random_permutation_test_is_seeded_and_close_to_scipy() -> None:
    rng = np.random.default_rng(9)
    a = rng.random(60)
    b = a - rng.normal(0.03, 0.1, size=60)
    first = paired_test(a, b, method="permutation", n_resamples=20_000, seed=1)
    again = paired_test(a, b, method="permutation", n_resamples=20_000, seed=1)
    other = paired_test(a, b, method="permutation", n_resamples=20_000, seed=2)
    assert first == again
    assert first.p_value != other.p_value
    # Both are Monte Carlo estimates of the same p-value; their standard error is about
    # sqrt(p (1 - p) / 20000) < 0.004.
    assert first.p_value == pytest.approx(_scipy_paired_permutation(a, b, 20_000), abs=0.02)
    # The randomization test and the t-test agree closely on 60 roughly normal differences.
    assert first.p_value == pytest.approx(paired_test(a, b).p_value, abs=0.03)


def test_identical_systems_and_constant_differences() -> None:
    same = paired_test([0.2, 0.5, 0.9], [0.2, 0.5, 0.9])
    assert (same.statistic, same.p_value, same.mean_difference) == (0.0, 1.0, 0.0)
    for method in ("wilcoxon", "permutation"):
        assert paired_test([0.2, 0.5], [0.2, 0.5], method=method).p_value == 1.0
    constant = paired_test([1.5, 2.5, 3.5], [1.0, 2.0, 3.0])  # every difference exactly 0.5
    assert constant.p_value == 0.0
    assert constant.statistic == math.inf


def test_paired_test_errors() -> None:
    with pytest.raises(ValueError, match="same queries"):
        paired_test([0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="at least 2 queries"):
        paired_test([0.1], [0.2])
    with pytest.raises(ValueError, match="unknown method 'z'"):
        paired_test([0.1, 0.2], [0.2, 0.3], method="z")  # type: ignore[arg-type]
