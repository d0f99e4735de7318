"""Which retrieved products become hard negatives: array operations over a batch of queries.

A retriever answers a batch of queries with ``rows`` and ``scores``, each
``(n_queries, depth)``, best first, ``-1`` padded at the end. Per query, a retrieved row is a
candidate negative when it

1. is retrieved (everything from the first ``-1`` on is padding);
2. is not a known positive of the query (known positives are skipped and do not use up the
   window);
3. ranks in ``(range_min, range_max]``, counting only the rows of 2 (ranks are 1-based);
4. scores below the query's margin threshold, when the margin filter is on (the rows of the
   window that do not are counted as filtered, likely false negatives).

From the candidates, ``n`` are taken per query: the best-ranked (``top``) or a seeded uniform
draw (``random``).

Steps 1-4 and ``top`` are masks and cumulative counts over the ``(n_queries, depth)`` matrix,
with no loop over queries. ``random`` draws with the miner's generator, one
``Generator.choice`` per query that has more than ``n`` candidates, in query order: the
generator's stream fixes what a seed gives, so the draws stay what they always were.

Example:
    >>> rows = np.array([[4, 7, 2, 9, -1]])
    >>> scores = np.array([[0.9, 0.8, 0.7, 0.5, -np.inf]])
    >>> known = known_mask(rows, query_of=np.array([0]), known_rows=np.array([7]))
    >>> window = select_window(rows, scores, known, range_min=0, range_max=3,
    ...                        threshold=np.array([0.85]))
    >>> window.candidates.astype(int).tolist(), window.filtered.astype(int).tolist()
    ([[0, 0, 1, 1, 0]], [[1, 0, 0, 0, 0]])
    >>> take_negatives(window.candidates, 1, sampling="top", rng=None).astype(int).tolist()
    [[0, 0, 1, 0, 0]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: How negatives are taken from the candidates.
SAMPLING_STRATEGIES = ("top", "random")


def known_mask(rows: np.ndarray, query_of: np.ndarray, known_rows: np.ndarray) -> np.ndarray:
    """Which retrieved rows are known positives of their query.

    Args:
        rows: ``(n_queries, depth)`` catalog rows, ``-1`` padded.
        query_of: ``(n_pairs,)`` the query (row of ``rows``) of each known positive.
        known_rows: ``(n_pairs,)`` its catalog row.

    Returns:
        ``(n_queries, depth)`` bool; padding is never known.

    Raises:
        ValueError: ``query_of`` and ``known_rows`` differ in length, or name a query that
            ``rows`` does not have.
    """
    query_of = np.asarray(query_of, dtype=np.int64)
    known_rows = np.asarray(known_rows, dtype=np.int64)
    if query_of.shape != known_rows.shape:
        raise ValueError(
            f"query_of {query_of.shape} and known_rows {known_rows.shape} must pair up"
        )
    if not len(query_of) or rows.size == 0:
        return np.zeros(rows.shape, dtype=bool)
    if query_of.min() < 0 or query_of.max() >= rows.shape[0]:
        raise ValueError(f"query_of must index the {rows.shape[0]} queries of rows")
    # One key per (query, row) pair: query * stride + row, with stride above every row.
    stride = int(max(rows.max(), known_rows.max())) + 1
    known_keys = np.sort(query_of * stride + known_rows)
    keys = np.arange(rows.shape[0], dtype=np.int64)[:, None] * stride + rows
    at = np.minimum(np.searchsorted(known_keys, keys), len(known_keys) - 1)
    return (known_keys[at] == keys) & (rows >= 0)


def positive_scores(
    item_vectors: np.ndarray, query_vectors: np.ndarray, query_of: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """``(n_pairs,)`` the inner product of each (query, catalog row) pair."""
    return np.einsum("ij,ij->i", item_vectors[rows], query_vectors[query_of])


def retrieved_scores(
    rows: np.ndarray, scores: np.ndarray, query_of: np.ndarray, wanted: np.ndarray
) -> np.ndarray:
    """``(n_pairs,)`` the retrieved score of each (query, catalog row) pair; the query's
    lowest retrieved score where the row was not retrieved (0 where nothing was)."""
    retrieved = rows >= 0
    lowest = np.where(retrieved, scores, np.inf).min(axis=1, initial=np.inf)
    floor = np.where(retrieved.any(axis=1), lowest, 0.0)
    # Find the pairs among the retrieved ones through sorted integer keys.
    stride = int(max(rows.max(initial=0), wanted.max(initial=0))) + 1
    keys = np.where(retrieved, np.arange(len(rows))[:, None] * stride + rows, -1).ravel()
    order = np.argsort(keys, kind="stable")
    pair_keys = query_of * stride + wanted
    at = np.minimum(np.searchsorted(keys, pair_keys, sorter=order), len(keys) - 1)
    found = keys[order[at]] == pair_keys
    return np.where(found, scores.ravel()[order[at]], floor[query_of])


def reduce_per_query(values: np.ndarray, query_of: np.ndarray, how: str) -> np.ndarray:
    """The ``mean``, ``min`` or ``max`` of ``values`` per query (pairs grouped by query, every
    query with at least one), in float64.

    Raises:
        ValueError: an unknown ``how``.
    """
    if how not in ("mean", "min", "max"):
        raise ValueError(f"how is {how!r}; expected 'mean', 'min' or 'max'")
    values = np.asarray(values, dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, query_of[1:] != query_of[:-1]])
    if how == "min":
        return np.minimum.reduceat(values, starts)
    if how == "max":
        return np.maximum.reduceat(values, starts)
    return np.add.reduceat(values, starts) / np.diff(np.r_[starts, len(values)])


def margin_thresholds(reference: np.ndarray, margin: float, margin_type: str) -> np.ndarray | None:
    """Per query, the score a candidate must stay below; None when the filter is off.

    ``relative``: ``reference * (1 - margin)`` (``reference`` itself when it is not positive);
    ``absolute``: ``reference - margin``.

    Raises:
        ValueError: an unknown ``margin_type``.
    """
    if margin_type not in ("relative", "absolute"):
        raise ValueError(f"margin_type is {margin_type!r}; expected 'relative' or 'absolute'")
    if margin <= 0:
        return None
    reference = np.asarray(reference, dtype=np.float64)
    if margin_type == "relative":
        return np.where(reference > 0, reference * (1 - margin), reference)
    return reference - margin


@dataclass(frozen=True)
class WindowSelection:
    """Masks over the retrieved ``(n_queries, depth)`` matrix.

    Attributes:
        ranks: int64, the 1-based rank of each row among the retrieved rows that are not known
            positives (0 for known positives and padding).
        candidates: bool, rows that may become negatives (steps 1-4 of the module docstring).
        filtered: bool, rows of the window dropped by the margin filter.
    """

    ranks: np.ndarray
    candidates: np.ndarray
    filtered: np.ndarray


def select_window(
    rows: np.ndarray,
    scores: np.ndarray,
    known: np.ndarray,
    *,
    range_min: int,
    range_max: int,
    threshold: np.ndarray | None,
) -> WindowSelection:
    """The candidate negatives of a batch (steps 1-4 of the module docstring).

    Args:
        rows: ``(n_queries, depth)`` catalog rows, best first, ``-1`` padded.
        scores: ``(n_queries, depth)`` their scores.
        known: ``(n_queries, depth)`` bool, from :func:`known_mask`.
        range_min: ranks up to this one are skipped.
        range_max: ranks above this one are not looked at.
        threshold: ``(n_queries,)`` from :func:`margin_thresholds`; None: no margin filter.

    Raises:
        ValueError: shapes that do not match.
    """
    if rows.shape != scores.shape or rows.shape != known.shape:
        raise ValueError(
            f"rows {rows.shape}, scores {scores.shape} and known {known.shape} must have "
            "the same shape (n_queries, depth)"
        )
    retrieved = np.cumsum(rows < 0, axis=1) == 0  # (n_queries, depth)
    counted = retrieved & ~known
    ranks = np.cumsum(counted, axis=1, dtype=np.int64) * counted
    in_window = counted & (ranks > range_min) & (ranks <= range_max)
    if threshold is None:
        filtered = np.zeros(rows.shape, dtype=bool)
    else:
        if np.shape(threshold) != (rows.shape[0],):
            raise ValueError(
                f"threshold has shape {np.shape(threshold)}; expected ({rows.shape[0]},)"
            )
        filtered = in_window & (scores >= np.asarray(threshold)[:, None])
    return WindowSelection(ranks=ranks, candidates=in_window & ~filtered, filtered=filtered)


def take_negatives(
    candidates: np.ndarray, n: int, *, sampling: str, rng: np.random.Generator | None
) -> np.ndarray:
    """The ``n`` negatives per query among ``candidates`` (all of them when fewer).

    Args:
        candidates: ``(n_queries, depth)`` bool, in rank order along each row.
        n: negatives per query.
        sampling: ``top`` (the first ``n`` candidates) or ``random`` (``n`` drawn uniformly
            with ``rng``, one draw per query with more than ``n`` candidates, in query order).
        rng: the generator of ``random`` (unused by ``top``).

    Returns:
        ``(n_queries, depth)`` bool, the chosen rows.

    Raises:
        ValueError: an unknown strategy, ``random`` without a generator, or ``n`` below 1.
    """
    if sampling not in SAMPLING_STRATEGIES:
        raise ValueError(f"sampling is {sampling!r}; expected one of {SAMPLING_STRATEGIES}")
    if n < 1:
        raise ValueError(f"n is {n}; expected at least 1 negative per query")
    chosen = candidates & (np.cumsum(candidates, axis=1) <= n)
    if sampling == "top":
        return chosen
    if rng is None:
        raise ValueError("random sampling needs a numpy Generator (rng)")
    for query in np.flatnonzero(candidates.sum(axis=1) > n):
        positions = np.flatnonzero(candidates[query])
        picked = np.sort(rng.choice(len(positions), size=n, replace=False))
        chosen[query] = False
        chosen[query, positions[picked]] = True
    return chosen
