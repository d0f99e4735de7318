"""Champion/challenger gate: promote a retrained model only if it is not worse.

The decision compares per-query metric values (e.g. NDCG@10 of each evaluation query) of the
model in service (champion) and the candidate (challenger) on the SAME queries:

* ``delta_i = challenger_i - champion_i``, ``mean_delta`` their mean;
* promote when ``mean_delta >= -tolerance`` (the challenger may be worse by at most
  ``tolerance``, which absorbs noise; it does not need to be significantly better);
* ``p_value`` is the two-sided paired t-test of ``mean_delta = 0``, reported with the decision
  so a reader can tell a real gain from noise (1.0 when every delta is 0).

:func:`promote_model` then swaps the run's ``current`` pointer atomically and keeps every
previous version (see :mod:`shopaug.models.registry`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import stats

from shopaug.models.registry import promote_model

__all__ = ["Decision", "decide", "promote_model"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    """The gate's answer and the numbers behind it."""

    promote: bool
    reason: str
    mean_delta: float
    p_value: float
    queries: int


def decide(
    champion_metric: np.ndarray,
    challenger_metric: np.ndarray,
    tolerance: float = 0.005,
) -> Decision:
    """Promote the challenger unless its mean per-query metric is lower by more than ``tolerance``.

    Args:
        champion_metric: per-query metric of the model in service, shape ``(queries,)``.
        challenger_metric: the candidate's metric on the same queries in the same order.
        tolerance: largest accepted loss of the mean (in metric units, e.g. 0.005 NDCG).

    Returns:
        A :class:`Decision`.

    Raises:
        ValueError: the arrays are empty, of different shapes, not 1-D, or not finite.

    Example:
        >>> decide(np.array([0.5, 0.6]), np.array([0.6, 0.7])).promote
        True
    """
    champion = np.asarray(champion_metric, dtype=np.float64)
    challenger = np.asarray(challenger_metric, dtype=np.float64)
    if champion.ndim != 1 or challenger.ndim != 1:
        raise ValueError(
            f"metrics must be 1-D per-query arrays; got shapes {champion.shape} and "
            f"{challenger.shape}"
        )
    if champion.shape != challenger.shape:
        raise ValueError(
            f"champion has {champion.size} queries and challenger {challenger.size}; "
            "expected the same queries in the same order"
        )
    if champion.size == 0:
        raise ValueError("no queries to compare")
    if not (np.isfinite(champion).all() and np.isfinite(challenger).all()):
        raise ValueError("metrics contain NaN or infinite values")
    if tolerance < 0:
        raise ValueError(f"tolerance is {tolerance}; expected 0 or more")
    delta = challenger - champion
    mean_delta = float(delta.mean())
    p_value = _paired_p_value(delta)
    promote = mean_delta >= -tolerance
    verb = "better" if mean_delta >= 0 else "worse"
    comparison = "within" if promote else "beyond"
    reason = (
        f"challenger is {verb} by {abs(mean_delta):.4f} on {delta.size} queries "
        f"(paired t-test p={p_value:.3g}), {comparison} the tolerance {tolerance}: "
        f"{'promote' if promote else 'keep the champion'}"
    )
    logger.info(reason)
    return Decision(promote, reason, mean_delta, p_value, int(delta.size))


def _paired_p_value(delta: np.ndarray) -> float:
    """Two-sided one-sample t-test of ``delta`` against 0, with the degenerate cases decided."""
    if delta.size < 2:
        return 1.0  # one query: no variance, no test
    if float(np.std(delta)) == 0.0:
        return 1.0 if float(delta[0]) == 0.0 else 0.0  # every query moved by the same amount
    return float(stats.ttest_1samp(delta, 0.0).pvalue)
