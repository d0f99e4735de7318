"""Exact random draws the samplers share: a categorical over the catalog with per-row exclusions.

With replacement, items are drawn from the whole catalog and the excluded ones are redrawn a
bounded number of times (rejection sampling, which leaves the distribution exactly the
renormalised one over the allowed items); rows still unlucky after that are drawn directly from
their renormalised distribution. Without replacement, a uniform row keeps the allowed items of
a random prefix of the catalog, and a weighted row uses the Gumbel-top-k trick (Kool et al.
2019), which draws ``k`` distinct items in the order sequential sampling would.
"""

from __future__ import annotations

import logging

import numpy as np

from shopaug.samplers.base import SampleRequest, SamplingError

logger = logging.getLogger(__name__)

#: Rounds of redrawing excluded items before the affected rows are drawn exactly.
DEFAULT_MAX_RETRIES = 8


class Categorical:
    """A fixed categorical distribution over ``len(weights)`` outcomes, drawn by inverse CDF.

    Args:
        weights: ``(m,)`` non-negative finite weights, not all zero (need not sum to 1).
    """

    def __init__(self, weights: np.ndarray) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        positive = np.flatnonzero(weights > 0)
        if weights.ndim != 1 or positive.size == 0:
            raise SamplingError("a categorical needs a 1-D array with at least one weight > 0")
        self.weights = weights
        self._cdf = np.cumsum(weights)
        self._last_positive = int(positive[-1])

    @property
    def probabilities(self) -> np.ndarray:
        """``(m,)`` float64 probabilities, summing to 1."""
        return self.weights / self._cdf[-1]

    def draw(self, size: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Draw outcomes (int64) of the given shape; outcomes of weight 0 never come out."""
        targets = rng.random(size) * self._cdf[-1]
        indices = np.searchsorted(self._cdf, targets, side="right")
        # u * total can round up to total; the last outcome with weight is the right answer then.
        return np.minimum(indices, self._last_positive).astype(np.int64)


def gumbel_top_k(log_weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``k`` distinct indices without replacement, proportionally to ``exp(log_weights)``.

    Indices whose log weight is ``-inf`` never come out; the caller makes sure at least ``k``
    are finite. The result is in draw order (largest perturbed key first).

    Args:
        log_weights: ``(m,)`` float64 log weights (unnormalised), ``-inf`` for impossible items.
        k: number of indices, ``1 <= k <= m``.
        rng: generator for the Gumbel noise.

    Returns:
        ``(k,)`` int64 indices into ``log_weights``.
    """
    keys = log_weights + rng.gumbel(size=log_weights.shape[0])
    top = np.argpartition(-keys, k - 1)[:k]
    return top[np.argsort(-keys[top], kind="stable")].astype(np.int64)


def _support_left(request: SampleRequest, support: np.ndarray | None) -> np.ndarray:
    """``(batch,)`` number of items with non-zero probability that each row may still draw."""
    if support is None:
        return np.array([request.n_items - len(items) for items in request.excluded])
    total = int(support.sum())
    return np.array([total - int(support[items].sum()) for items in request.excluded])


def check_enough_items(
    request: SampleRequest, available: np.ndarray, *, replace: bool, what: str
) -> None:
    """Raise :class:`SamplingError` for the first row that has too few items left.

    Args:
        request: the checked request.
        available: ``(batch,)`` items each row may still draw.
        replace: with replacement one item is enough; without, ``n`` are needed.
        what: the pool the items come from, for the message ("catalog items", ...).
    """
    needed = 1 if replace else request.n
    short = np.flatnonzero(available < needed)
    if short.size:
        row = int(short[0])
        how = "with replacement" if replace else "without replacement"
        raise SamplingError(
            f"row {row} (positive {request.positive_rows[row]}): only {available[row]} {what} "
            f"left after excluding its {len(request.excluded[row])} positive(s), but {needed} "
            f"are needed to draw n={request.n} negatives {how}"
        )


def draw_from_catalog(
    request: SampleRequest,
    rng: np.random.Generator,
    *,
    categorical: Categorical | None,
    replace: bool,
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> np.ndarray:
    """Draw ``(batch, n)`` item rows from a fixed catalog distribution, never an excluded one.

    Args:
        request: the checked request (rows, ``n``, exclusions).
        rng: generator of every draw.
        categorical: the distribution over the ``n_items`` rows, or ``None`` for uniform.
        replace: draw with replacement (fast, rejection of excluded items) or without
            (distinct items per row; uniform costs ``O(n + excluded)`` per row, a weighted
            distribution ``O(n_items)`` per row for its Gumbel-top-k).
        max_retries: rounds of redrawing excluded items before exact per-row draws.

    Returns:
        ``(batch, n)`` int64 item rows.

    Raises:
        SamplingError: when a row has too few allowed items of non-zero probability.
    """
    support = None if categorical is None else categorical.weights > 0
    available = _support_left(request, support)
    check_enough_items(request, available, replace=replace, what="catalog items")
    shape = (request.batch_size, request.n)

    def row_weights(row: int) -> np.ndarray:
        weights = np.ones(request.n_items) if categorical is None else categorical.weights.copy()
        weights[request.excluded[row]] = 0.0
        return weights

    if not replace:
        items = np.empty(shape, dtype=np.int64)
        for row in range(request.batch_size):
            if categorical is None:
                # The allowed items of a uniformly random ordered prefix, long enough to hold n of
                # them, are a uniformly random ordered n-sample of the allowed items.
                excluded = request.excluded[row]
                size = min(request.n_items, request.n + len(excluded))
                prefix = rng.choice(request.n_items, size=size, replace=False)
                items[row] = prefix[~np.isin(prefix, excluded)][: request.n]
                continue
            with np.errstate(divide="ignore"):
                log_weights = np.log(row_weights(row))
            items[row] = gumbel_top_k(log_weights, request.n, rng)
        return items

    def draw(size: int | tuple[int, ...]) -> np.ndarray:
        if categorical is None:
            return rng.integers(0, request.n_items, size=size, dtype=np.int64)
        return categorical.draw(size, rng)

    items = draw(shape)
    hits = request.hits_excluded(items)
    for _ in range(max_retries):
        if not hits.any():
            return items
        items[hits] = draw(int(hits.sum()))
        hits = request.hits_excluded(items)
    unlucky = np.flatnonzero(hits.any(axis=1))
    if unlucky.size:
        logger.debug(
            "%d row(s) still drew excluded items after %d retries; drawing them exactly",
            unlucky.size,
            max_retries,
        )
    for row in unlucky.tolist():
        items[row, hits[row]] = Categorical(row_weights(row)).draw(int(hits[row].sum()), rng)
    return items
