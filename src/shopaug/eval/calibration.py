"""Metrics of predicted click probabilities: AUC, log loss, normalized entropy, calibration and a
reliability plot.

Pure, keyword-only functions over arrays of 0/1 ``labels`` and predicted ``probabilities``
(one per impression). ``log_losses`` returns the per-impression array (averaging is the
caller's choice); AUC and the calibration error are properties of the whole set. Cross-checked
against scikit-learn's ``roc_auc_score``, ``log_loss`` and ``calibration_curve`` in the tests.

Example:
    >>> import numpy as np
    >>> labels, probabilities = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    >>> roc_auc(labels=labels, scores=probabilities)
    0.75
    >>> round(float(log_losses(labels=labels, probabilities=probabilities).mean()), 4)
    0.4723
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from markupsafe import Markup
from matplotlib.figure import Figure
from scipy.stats import rankdata

from shopaug.eval.charts import SERIES_COLORS, svg_markup

STRATEGIES = ("quantile", "uniform")


def _check(labels: np.ndarray, values: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    p = np.asarray(values, dtype=np.float64)
    if y.ndim != 1 or p.shape != y.shape:
        raise ValueError(
            f"labels and {name} must be 1-d arrays of one length, got {y.shape} and {p.shape}"
        )
    if y.size == 0:
        raise ValueError("labels is empty")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(p).all():
        raise ValueError(f"{name} has non-finite values")
    return y.astype(np.int64), p


def roc_auc(*, labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a random click > score of a random non-click),
    ties counting one half (the Mann-Whitney U statistic over ``n_pos * n_neg``).

    Raises:
        ValueError: Labels of one class only (AUC is undefined), or bad shapes.
    """
    y, s = _check(labels, scores, "scores")
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs at least one click and one non-click")
    ranks = rankdata(s)  # average ranks for ties
    u = ranks[y == 1].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def log_losses(*, labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-15) -> np.ndarray:
    """Per-impression negative log-likelihood ``-(y log p + (1 - y) log(1 - p))``, ``p``
    clipped to ``[eps, 1 - eps]``; shape ``(n,)``."""
    y, p = _check(labels, probabilities, "probabilities")
    p = np.clip(p, eps, 1 - eps)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def normalized_entropy(*, labels: np.ndarray, probabilities: np.ndarray, base_rate: float) -> float:
    """Mean log loss of ``probabilities`` over the mean log loss of the constant ``base_rate``
    on the same impressions (He et al. 2014, "Practical lessons from predicting clicks on ads at
    Facebook"): below 1, the model predicts clicks better than the background rate.

    Example:
        >>> round(normalized_entropy(labels=np.array([0, 1]), probabilities=np.array([0.2, 0.8]),
        ...     base_rate=0.5), 4)
        0.3219
    """
    if not 0 < base_rate < 1:
        raise ValueError(f"base_rate is {base_rate}; expected a number in (0, 1)")
    y, _ = _check(labels, probabilities, "probabilities")
    model = log_losses(labels=y, probabilities=probabilities).mean()
    constant = log_losses(labels=y, probabilities=np.full(y.size, base_rate)).mean()
    return float(model / constant)


@dataclass(frozen=True)
class ReliabilityBins:
    """Non-empty bins of a reliability diagram.

    Attributes:
        predicted: Mean predicted probability in each bin, ``(bins,)``.
        observed: Click rate in each bin, ``(bins,)``.
        counts: Impressions in each bin, ``(bins,)``.
    """

    predicted: np.ndarray
    observed: np.ndarray
    counts: np.ndarray

    def as_dict(self) -> dict[str, list[float]]:
        return {
            "predicted": self.predicted.tolist(),
            "observed": self.observed.tolist(),
            "counts": self.counts.tolist(),
        }


def reliability_bins(
    *, labels: np.ndarray, probabilities: np.ndarray, bins: int = 10, strategy: str = "quantile"
) -> ReliabilityBins:
    """Bin impressions by predicted probability; empty bins are left out.

    ``quantile`` bins hold about the same number of impressions (edges at the percentiles of
    the predictions), the useful choice when clicks are rare and most predictions sit near 0;
    ``uniform`` bins split [0, 1] evenly. Bin membership follows scikit-learn's
    ``calibration_curve`` (``searchsorted`` on the inner edges), so the two agree.
    """
    y, p = _check(labels, probabilities, "probabilities")
    if bins < 1:
        raise ValueError(f"bins is {bins}; expected 1 or more")
    if strategy == "quantile":
        edges = np.percentile(p, np.linspace(0, 100, bins + 1))
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, bins + 1)
    else:
        raise ValueError(f"strategy is {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    index = np.searchsorted(edges[1:-1], p)
    counts = np.bincount(index, minlength=bins)
    sums = np.bincount(index, weights=p, minlength=bins)
    hits = np.bincount(index, weights=y, minlength=bins)
    full = counts > 0
    return ReliabilityBins(
        predicted=sums[full] / counts[full],
        observed=hits[full] / counts[full],
        counts=counts[full],
    )


def expected_calibration_error(
    *, labels: np.ndarray, probabilities: np.ndarray, bins: int = 10, strategy: str = "quantile"
) -> float:
    """``sum_b n_b / n * |click rate_b - mean prediction_b|`` over the bins of
    :func:`reliability_bins` (Naeini et al. 2015; Guo et al. 2017)."""
    table = reliability_bins(
        labels=labels, probabilities=probabilities, bins=bins, strategy=strategy
    )
    weights = table.counts / table.counts.sum()
    return float((weights * np.abs(table.observed - table.predicted)).sum())


def bootstrap_metric(
    metric: Callable[[np.ndarray, np.ndarray], float],
    *,
    labels: np.ndarray,
    probabilities: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric(labels, probabilities)`` over impressions.

    Resamples in which the metric is undefined (a ``ValueError``, e.g. AUC of a resample
    without clicks) are skipped.

    Raises:
        ValueError: No resample gave a value.
    """
    y, p = _check(labels, probabilities, "probabilities")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        pick = rng.integers(0, y.size, y.size)
        try:
            values.append(metric(y[pick], p[pick]))
        except ValueError:
            continue
    if not values:
        raise ValueError("the metric is undefined on every bootstrap resample")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def summarize_probabilities(
    *,
    labels: np.ndarray,
    probabilities: np.ndarray,
    bins: int = 10,
    n_resamples: int = 1000,
    seed: int = 0,
    base_rate: float | None = None,
) -> dict[str, Any]:
    """AUC, mean log loss and ECE (and, with ``base_rate``, the :func:`normalized_entropy`
    against it), each ``{"mean": value, "ci95": [low, high]}`` with a :func:`bootstrap_metric`
    interval (the same resamples for every metric), and ``mean_predicted``."""

    def auc(y: np.ndarray, p: np.ndarray) -> float:
        return roc_auc(labels=y, scores=p)

    def loss(y: np.ndarray, p: np.ndarray) -> float:
        return float(log_losses(labels=y, probabilities=p).mean())

    def ece(y: np.ndarray, p: np.ndarray) -> float:
        return expected_calibration_error(labels=y, probabilities=p, bins=bins)

    def entropy(y: np.ndarray, p: np.ndarray) -> float:
        assert base_rate is not None
        return normalized_entropy(labels=y, probabilities=p, base_rate=base_rate)

    metrics: list[tuple[str, Callable[[np.ndarray, np.ndarray], float]]] = [
        ("auc", auc),
        ("log_loss", loss),
        ("ece", ece),
    ]
    if base_rate is not None:
        metrics.append(("normalized_entropy", entropy))
    out: dict[str, Any] = {}
    for name, metric in metrics:
        low, high = bootstrap_metric(
            metric,
            labels=labels,
            probabilities=probabilities,
            n_resamples=n_resamples,
            seed=seed,
        )
        out[name] = {"mean": metric(labels, probabilities), "ci95": [low, high]}
    out["mean_predicted"] = float(np.mean(probabilities))
    return out


_STYLE: Any = {"svg.fonttype": "none", "svg.hashsalt": "shopaug-report", "text.parse_math": False}


def reliability_chart(curves: Mapping[str, ReliabilityBins], *, title: str) -> Markup:
    """A reliability diagram, one line per model, the diagonal as perfect calibration.

    Both axes are on a log scale: CTRs of a fraction of a percent would otherwise sit in one
    corner. Bins without clicks are drawn at the bottom of the axis (observed 0)."""
    top = max(
        [float(c.predicted.max()) for c in curves.values() if c.predicted.size]
        + [float(c.observed.max()) for c in curves.values() if c.observed.size]
        + [1e-3]
    )
    floor = top / 1000
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(7.5, 4.6), layout="constrained")
        axes = figure.add_subplot()
        axes.plot([floor, top], [floor, top], color="#8C8C8C", linestyle="--", label="perfect")
        for index, (name, table) in enumerate(curves.items()):
            axes.plot(
                np.maximum(table.predicted, floor),
                np.maximum(table.observed, floor),
                marker="o",
                markersize=3.5,
                color=SERIES_COLORS[index % len(SERIES_COLORS)],
                linestyle=("-", "--", ":")[index // len(SERIES_COLORS) % 3],
                label=name,
            )
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.grid(color="#E5E8EC")
        axes.set_xlabel("mean predicted CTR in bin")
        axes.set_ylabel("observed CTR in bin")
        axes.set_title(title, loc="left", fontweight="bold")
        figure.legend(loc="outside lower center", ncols=min(3, len(curves) + 1))
        return svg_markup(figure, "reliability", title)


__all__ = [
    "ReliabilityBins",
    "bootstrap_metric",
    "expected_calibration_error",
    "log_losses",
    "normalized_entropy",
    "reliability_bins",
    "reliability_chart",
    "roc_auc",
    "summarize_probabilities",
]
