"""Confidence intervals and paired tests against hand-computed values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from shopaug.eval.significance import (
    PairedTestResult,
    bootstrap_interval,
    confidence_interval,
    fold_summary,
    paired_bootstrap,
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


def _two_systems(n: int = 200, shift: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    b = rng.uniform(0, 1, n)
    a = np.clip(b + shift + rng.normal(0, 0.15, n), 0, 1)
    return a, b


def test_bootstrap_interval_matches_scipy_percentile_bootstrap() -> None:
    values, _ = _two_systems()
    ours = bootstrap_interval(values, n_resamples=20_000, seed=1)
    theirs = stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=20_000,
        method="percentile",
        confidence_level=0.95,
        rng=np.random.default_rng(2),
    ).confidence_interval
    assert ours.mean == pytest.approx(values.mean())
    # Two Monte Carlo estimates of the same quantiles: equal up to resampling noise (~1e-3).
    assert ours.low == pytest.approx(theirs.low, abs=0.004)
    assert ours.high == pytest.approx(theirs.high, abs=0.004)
    # The interval is about mean ± 1.96 standard errors for a mean over 200 queries.
    half = 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert ours.high - ours.low == pytest.approx(2 * half, rel=0.05)


def test_paired_bootstrap_matches_scipy_paired_percentile_bootstrap() -> None:
    a, b = _two_systems()
    ours = paired_bootstrap(a, b, n_resamples=20_000, seed=1)
    theirs = stats.bootstrap(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        paired=True,
        n_resamples=20_000,
        method="percentile",
        confidence_level=0.95,
        rng=np.random.default_rng(2),
    ).confidence_interval
    assert ours.mean_difference == pytest.approx(float(np.mean(a - b)))
    assert ours.low == pytest.approx(theirs.low, abs=0.003)
    assert ours.high == pytest.approx(theirs.high, abs=0.003)
    assert ours.low > 0 and ours.p_value < 0.05  # a shift of 0.03 over 200 queries shows


def test_paired_bootstrap_p_value_agrees_with_the_paired_t_test() -> None:
    for shift in (0.0, 0.01, 0.03):
        a, b = _two_systems(shift=shift)
        boot = paired_bootstrap(a, b, n_resamples=20_000).p_value
        t = paired_test(a, b).p_value
        assert boot == pytest.approx(t, abs=0.02)  # large-sample equivalents


def test_paired_bootstrap_is_seeded_antisymmetric_and_degenerate_cases() -> None:
    a, b = _two_systems(n=50)
    first = paired_bootstrap(a, b, n_resamples=500, seed=3)
    assert first == paired_bootstrap(a, b, n_resamples=500, seed=3)
    assert first != paired_bootstrap(a, b, n_resamples=500, seed=4)
    mirrored = paired_bootstrap(b, a, n_resamples=500, seed=3)
    assert mirrored.mean_difference == pytest.approx(-first.mean_difference)
    assert (mirrored.low, mirrored.high) == pytest.approx((-first.high, -first.low))
    assert mirrored.p_value == pytest.approx(first.p_value)

    same = paired_bootstrap(a, a)
    assert (same.mean_difference, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    # Constant differences: every resample has the same mean, so 0 is never reached.
    constant = paired_bootstrap(b + 0.1, b, n_resamples=999)
    assert constant.low == pytest.approx(0.1) and constant.high == pytest.approx(0.1)
    assert constant.p_value == pytest.approx(1 / 1000)
    flat = bootstrap_interval([0.3, 0.3, 0.3])
    assert (flat.mean, flat.low, flat.high) == pytest.approx((0.3, 0.3, 0.3))


def test_bootstrap_errors() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_interval([0.5])
    with pytest.raises(ValueError, match="same queries"):
        paired_bootstrap([0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap([0.1, math.nan], [0.1, 0.2])
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_interval([0.1, 0.2], n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([0.1, 0.2], [0.2, 0.1], confidence=1.0)
