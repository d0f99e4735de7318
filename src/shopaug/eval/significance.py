"""Confidence intervals over folds and queries, and paired significance tests over per-query
scores.

Two systems evaluated on the same queries give two aligned per-query arrays; the tests here
compare them pair by pair. Three tests are offered:

- ``"t"``: paired Student t-test (:func:`scipy.stats.ttest_rel`), the usual choice in IR
  papers; robust enough for means over hundreds of queries.
- ``"wilcoxon"``: Wilcoxon signed-rank test (:func:`scipy.stats.wilcoxon`), no normality
  assumption, but it tests medians of differences rather than the mean.
- ``"permutation"``: paired randomization test (Fisher; Smucker et al., CIKM 2007): flip the
  sign of each per-query difference at random and see how often the mean difference is at least
  as far from 0 as the observed one. Exact (all ``2**n`` sign patterns) when that is no more than
  ``n_resamples``, otherwise Monte Carlo with an explicit seed, so the p-value is reproducible.

A Student-t interval over two to five fold means is wide and can run past 1; the bootstrap
over test queries (:func:`bootstrap_interval` for one system, :func:`paired_bootstrap` for a
difference, with its p-value) uses every query instead and is reported beside it.

Example:
    >>> a = np.array([0.50, 0.40, 0.90, 0.30])
    >>> b = np.array([0.40, 0.35, 0.80, 0.30])
    >>> round(paired_test(a, b, method="permutation").p_value, 3)
    0.25
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

logger = logging.getLogger(__name__)

TestMethod = Literal["t", "wilcoxon", "permutation"]
_TEST_NAMES: dict[str, str] = {
    "t": "paired t",
    "wilcoxon": "wilcoxon",
    "permutation": "permutation",
}


@dataclass(frozen=True)
class PairedTestResult:
    """Outcome of a paired test of system ``a`` against system ``b``.

    Attributes:
        statistic: The test statistic (t for ``"paired t"``, W for ``"wilcoxon"``, the mean
            difference for ``"permutation"``).
        p_value: Two-sided p-value.
        mean_difference: ``mean(a - b)``; positive when ``a`` scores higher.
        test: ``"paired t"``, ``"wilcoxon"`` or ``"permutation"``.
    """

    statistic: float
    p_value: float
    mean_difference: float
    test: str


def _as_vector(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float64)
    if vector.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {vector.shape}")
    if not np.all(np.isfinite(vector)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return vector


def confidence_interval(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float]:
    """Student-t confidence interval of the mean of ``values`` (e.g. one metric over folds).

    ``mean ± t_{(1+confidence)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation.

    Args:
        values: At least one finite value.
        confidence: Coverage in (0, 1).

    Returns:
        ``(low, high)``. Identical values give a zero-width interval at their mean. A single
        value gives ``(nan, nan)``: one fold says nothing about the spread, and an interval of
        width 0 would claim certainty that is not there.

    Raises:
        ValueError: ``values`` is empty or not finite, or ``confidence`` is outside (0, 1).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    vector = _as_vector("values", values)
    if vector.size == 0:
        raise ValueError("values is empty; a confidence interval needs at least one value")
    if vector.size == 1:
        logger.warning("confidence interval of a single value is undefined; returning NaN")
        return (math.nan, math.nan)
    mean = float(vector.mean())
    standard_error = float(vector.std(ddof=1)) / math.sqrt(vector.size)
    if standard_error == 0.0:
        return (mean, mean)
    half_width = float(stats.t.ppf((1 + confidence) / 2, df=vector.size - 1)) * standard_error
    return (mean - half_width, mean + half_width)


def _sign_flip_p_value(
    differences: np.ndarray, *, n_resamples: int, rng: np.random.Generator
) -> float:
    observed = abs(float(differences.mean()))
    tolerance = observed * 1e-12  # equal means up to rounding count as "at least as extreme"
    n = differences.size
    if 2**n <= n_resamples:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))  # (2**n, n)
        means = np.abs(signs @ differences) / n
        return float(np.mean(means >= observed - tolerance))
    extreme = 0
    for start in range(0, n_resamples, 10_000):  # bounded memory for large query sets
        size = min(10_000, n_resamples - start)
        signs = rng.choice((-1.0, 1.0), size=(size, n))  # (size, n)
        means = np.abs(signs @ differences) / n
        extreme += int(np.count_nonzero(means >= observed - tolerance))
    # Count the observed labelling itself, so the estimate is never 0 (Phipson & Smyth 2010).
    return (extreme + 1) / (n_resamples + 1)


def paired_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    method: TestMethod = "t",
    n_resamples: int = 10_000,
    seed: int = 0,
) -> PairedTestResult:
    """Two-sided paired test of per-query scores of system ``a`` against system ``b``.

    Args:
        a: Per-query scores of the first system, shape ``(n_queries,)``.
        b: Per-query scores of the second system on the same queries, same order.
        method: ``"t"`` (paired t-test), ``"wilcoxon"`` (signed-rank) or ``"permutation"``
            (paired randomization test).
        n_resamples: Random sign patterns of the permutation test; when ``2**n_queries`` is
            not more, every pattern is enumerated and the p-value is exact.
        seed: Seed of the permutation test's ``numpy.random.Generator``.

    Returns:
        The statistic, two-sided p-value, mean difference and test name. When every
        difference is 0 the systems are indistinguishable: statistic 0 and p-value 1.

    Raises:
        ValueError: Arrays of different lengths, fewer than two queries, non-finite values,
            or an unknown method.

    Example:
        >>> paired_test([0.5, 0.6, 0.7], [0.4, 0.4, 0.6]).test
        'paired t'
    """
    if method not in _TEST_NAMES:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(_TEST_NAMES)}")
    first = _as_vector("a", a)
    second = _as_vector("b", b)
    if first.shape != second.shape:
        raise ValueError(
            f"a and b must score the same queries: got {first.size} and {second.size} values"
        )
    if first.size < 2:
        raise ValueError(f"a paired test needs at least 2 queries, got {first.size}")
    differences = first - second
    mean_difference = float(differences.mean())
    name = _TEST_NAMES[method]
    if not np.any(differences):
        return PairedTestResult(0.0, 1.0, 0.0, name)

    if method == "t" and np.all(differences == differences[0]):
        # Constant non-zero differences: zero variance, t is infinite (scipy would give NaN).
        statistic, p_value = math.copysign(math.inf, mean_difference), 0.0
    elif method == "t":
        t_result = stats.ttest_rel(first, second)
        statistic, p_value = float(t_result.statistic), float(t_result.pvalue)
    elif method == "wilcoxon":
        w_result = stats.wilcoxon(first, second)
        statistic, p_value = float(w_result.statistic), float(w_result.pvalue)
    else:
        if n_resamples < 1:
            raise ValueError(f"n_resamples must be positive, got {n_resamples}")
        rng = np.random.default_rng(seed)
        statistic = mean_difference
        p_value = _sign_flip_p_value(differences, n_resamples=n_resamples, rng=rng)
    return PairedTestResult(statistic, p_value, mean_difference, name)


def fold_summary(
    per_fold: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> dict[str, object]:
    """The metrics.json entry of one metric over folds.

    Args:
        per_fold: The metric's value on each fold (at least one).
        confidence: Coverage of the interval (the key stays ``"ci95"``: pass the default).

    Returns:
        ``{"mean": float, "ci95": [low, high], "per_fold": [float, ...]}``. With a single fold
        the interval cannot be estimated and is ``[None, None]`` (JSON ``null``).

    Example:
        >>> fold_summary([0.5, 0.5])
        {'mean': 0.5, 'ci95': [0.5, 0.5], 'per_fold': [0.5, 0.5]}
    """
    values = [float(value) for value in _as_vector("per_fold", per_fold)]
    if not values:
        raise ValueError("per_fold is empty; give the metric of at least one fold")
    low, high = confidence_interval(values, confidence)
    interval = [None, None] if math.isnan(low) else [low, high]
    return {"mean": float(np.mean(values)), "ci95": interval, "per_fold": values}


#: Rows of resampled query indices drawn at once, so memory stays bounded on large query sets.
_BOOTSTRAP_CHUNK_VALUES = 2_000_000


@dataclass(frozen=True)
class BootstrapInterval:
    """Percentile bootstrap interval of one system's mean over queries.

    Attributes:
        mean: The observed mean.
        low: Lower end of the interval.
        high: Upper end of the interval.
        confidence: Coverage of the interval.
        n_resamples: Bootstrap resamples drawn.
    """

    mean: float
    low: float
    high: float
    confidence: float
    n_resamples: int


@dataclass(frozen=True)
class PairedBootstrapResult:
    """Paired bootstrap of system ``a`` against system ``b`` over the same queries.

    Attributes:
        mean_difference: ``mean(a - b)``; positive when ``a`` scores higher.
        low: Lower end of the percentile interval of the mean difference.
        high: Upper end of that interval.
        p_value: Two-sided p-value of "no difference" (see :func:`paired_bootstrap`).
        confidence: Coverage of the interval.
        n_resamples: Bootstrap resamples drawn.
    """

    mean_difference: float
    low: float
    high: float
    p_value: float
    confidence: float
    n_resamples: int


def _check_bootstrap_args(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _bootstrap_means(values: np.ndarray, *, n_resamples: int, seed: int) -> np.ndarray:
    """Means of ``n_resamples`` resamples (queries drawn with replacement), shape
    ``(n_resamples,)``."""
    rng = np.random.default_rng(seed)
    n = values.size
    chunk = max(1, _BOOTSTRAP_CHUNK_VALUES // n)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        rows = rng.integers(0, n, size=(size, n))  # (size, n)
        means[start : start + size] = values[rows].mean(axis=1)
    return means


def _percentile_interval(means: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapInterval:
    """Percentile bootstrap interval of the mean of per-query ``values`` (Efron 1979).

    Draws ``n_resamples`` sets of ``n`` queries with replacement and takes the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles (linear interpolation) of
    their means, as :func:`scipy.stats.bootstrap` with ``method="percentile"`` does.

    Args:
        values: One system's per-query scores, shape ``(n_queries,)``, at least 2.
        n_resamples: Bootstrap resamples.
        seed: Seed of the ``numpy.random.Generator``: same seed, same interval.
        confidence: Coverage in (0, 1).

    Returns:
        The mean and its interval. Identical values give a zero-width interval at their mean.

    Raises:
        ValueError: Fewer than 2 values, non-finite values, ``n_resamples < 1`` or
            ``confidence`` outside (0, 1).

    Example:
        >>> result = bootstrap_interval([0.2, 0.4, 0.6, 0.8], n_resamples=2000)
        >>> result.mean, 0.2 <= result.low < result.mean < result.high <= 0.8
        (0.5, True)
    """
    _check_bootstrap_args(n_resamples, confidence)
    vector = _as_vector("values", values)
    if vector.size < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 queries, got {vector.size}")
    means = _bootstrap_means(vector, n_resamples=n_resamples, seed=seed)
    low, high = _percentile_interval(means, confidence)
    return BootstrapInterval(float(vector.mean()), low, high, confidence, n_resamples)


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedBootstrapResult:
    """Paired bootstrap over queries of the mean difference ``mean(a - b)``.

    Queries are resampled with replacement, keeping each query's pair together. The interval
    is the percentile interval of the resampled mean differences (as :func:`bootstrap_interval`).
    The p-value tests "no difference" with the shifted bootstrap distribution (Efron &
    Tibshirani 1993, section 16.4; Sakai, SIGIR 2006): the share of resampled means that lie at
    least as far from the observed mean as the observed mean lies from 0,
    ``(#{|d*_r - d| >= |d|} + 1) / (n_resamples + 1)``, so it is never 0.

    Args:
        a: Per-query scores of the first system, shape ``(n_queries,)``, at least 2.
        b: Per-query scores of the second system on the same queries, same order.
        n_resamples: Bootstrap resamples.
        seed: Seed of the ``numpy.random.Generator``: same seed, same result.
        confidence: Coverage of the interval, in (0, 1).

    Returns:
        Mean difference, its interval, and the two-sided p-value. When every difference is 0
        the interval is ``(0, 0)`` and the p-value 1.

    Raises:
        ValueError: Arrays of different lengths, fewer than 2 queries, non-finite values,
            ``n_resamples < 1`` or ``confidence`` outside (0, 1).

    Example:
        >>> result = paired_bootstrap([0.5, 0.6, 0.7, 0.9], [0.4, 0.4, 0.6, 0.7])
        >>> round(result.mean_difference, 3), result.low > 0, result.p_value < 0.05
        (0.15, True, True)
    """
    _check_bootstrap_args(n_resamples, confidence)
    first = _as_vector("a", a)
    second = _as_vector("b", b)
    if first.shape != second.shape:
        raise ValueError(
            f"a and b must score the same queries: got {first.size} and {second.size} values"
        )
    if first.size < 2:
        raise ValueError(f"a paired bootstrap needs at least 2 queries, got {first.size}")
    differences = first - second
    observed = float(differences.mean())
    if not np.any(differences):
        return PairedBootstrapResult(0.0, 0.0, 0.0, 1.0, confidence, n_resamples)
    means = _bootstrap_means(differences, n_resamples=n_resamples, seed=seed)
    low, high = _percentile_interval(means, confidence)
    tolerance = abs(observed) * 1e-12  # equal up to rounding counts as "at least as far"
    extreme = int(np.count_nonzero(np.abs(means - observed) >= abs(observed) - tolerance))
    p_value = (extreme + 1) / (n_resamples + 1)
    return PairedBootstrapResult(observed, low, high, p_value, confidence, n_resamples)
