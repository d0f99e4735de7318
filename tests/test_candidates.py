"""The miner's vectorised candidate selection against a straightforward per-query loop."""

from __future__ import annotations

import numpy as np
import pytest

from shopaug.augment.candidates import (
    known_mask,
    margin_thresholds,
    select_window,
    take_negatives,
)


def loop_negatives(
    rows: np.ndarray,
    scores: np.ndarray,
    known: list[set[int]],
    threshold: np.ndarray | None,
    *,
    range_min: int,
    range_max: int,
    n: int,
    sampling: str,
    rng: np.random.Generator,
) -> tuple[list[list[tuple[int, int, float]]], int, int]:
    """The rules written out query by query: [(rank, row, score)] per query, the number of
    rows the margin dropped and the number of queries short of ``n`` candidates."""
    chosen, filtered, short = [], 0, 0
    for q in range(len(rows)):
        candidates = []
        rank = 0
        for row, score in zip(rows[q].tolist(), scores[q].tolist()):
            if row < 0:
                break
            if row in known[q]:
                continue
            rank += 1
            if rank <= range_min:
                continue
            if rank > range_max:
                break
            if threshold is not None and score >= threshold[q]:
                filtered += 1
                continue
            candidates.append((rank, row, score))
        short += len(candidates) < n
        if sampling == "random" and len(candidates) > n:
            picked = np.sort(rng.choice(len(candidates), size=n, replace=False))
            candidates = [candidates[i] for i in picked]
        chosen.append(candidates[:n])
    return chosen, filtered, short


def pairs(known: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-query lists of known rows as (query, row) pairs."""
    query_of = np.repeat(np.arange(len(known)), [len(k) for k in known])
    return query_of, np.concatenate(known)


def random_retrieval(rng: np.random.Generator, n_queries: int, n_items: int, depth: int):
    """Rows without repeats per query, scores with many ties (one decimal), best first,
    some queries padded with -1, and known positives inside and outside the retrieved rows."""
    rows = np.full((n_queries, depth), -1, dtype=np.int64)
    scores = np.full((n_queries, depth), -np.inf, dtype=np.float32)
    known: list[np.ndarray] = []
    for q in range(n_queries):
        found = depth if q % 3 else int(rng.integers(0, depth))  # every third one runs short
        rows[q, :found] = rng.choice(n_items, size=found, replace=False)
        scores[q, :found] = np.sort(np.round(rng.uniform(-0.2, 1.0, found), 1))[::-1]
        inside = rng.choice(
            rows[q, :found], size=min(found, int(rng.integers(0, 6))), replace=False
        )
        outside = rng.integers(0, n_items, size=int(rng.integers(0, 3)))
        known.append(np.unique(np.concatenate([inside, outside]).astype(np.int64)))
    return rows, scores, known


@pytest.mark.parametrize("sampling", ["top", "random"])
@pytest.mark.parametrize(
    ("range_min", "range_max", "margin_filter"),
    [(0, 10, False), (0, 10, True), (2, 12, True), (0, 30, True), (5, 12, False)],
)
def test_vectorised_selection_equals_the_loop(
    sampling: str, range_min: int, range_max: int, margin_filter: bool
) -> None:
    data = np.random.default_rng(11)
    rows, scores, known = random_retrieval(data, n_queries=60, n_items=40, depth=25)
    threshold = None
    if margin_filter:  # a retrieved score of each query: ties with the threshold occur
        column = data.integers(0, 12, size=len(rows))
        threshold = scores[np.arange(len(rows)), column].astype(np.float64)
        threshold[~np.isfinite(threshold)] = 0.5
    n = 4
    expected, filtered, short = loop_negatives(
        rows,
        scores,
        [set(k.tolist()) for k in known],
        threshold,
        range_min=range_min,
        range_max=range_max,
        n=n,
        sampling=sampling,
        rng=np.random.default_rng(5),
    )
    window = select_window(
        rows,
        scores,
        known_mask(rows, *pairs(known)),
        range_min=range_min,
        range_max=range_max,
        threshold=threshold,
    )
    chosen = take_negatives(window.candidates, n, sampling=sampling, rng=np.random.default_rng(5))
    got = [
        [(int(window.ranks[q, j]), int(rows[q, j]), float(scores[q, j])) for j in np.flatnonzero(c)]
        for q, c in enumerate(chosen)
    ]
    assert got == expected
    assert int(window.filtered.sum()) == filtered
    assert int((window.candidates.sum(axis=1) < n).sum()) == short
    assert any(len(c) == n for c in expected) and any(len(c) < n for c in expected)
    assert filtered > 0 if margin_filter else filtered == 0


def test_known_positives_do_not_use_up_the_window() -> None:
    rows = np.array([[3, 8, 1, 6, 2, -1]])
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, -np.inf]])
    known = known_mask(rows, np.array([0, 0]), np.array([8, 6]))
    assert known.tolist() == [[False, True, False, True, False, False]]
    window = select_window(rows, scores, known, range_min=1, range_max=3, threshold=None)
    assert window.ranks.tolist() == [[1, 0, 2, 0, 3, 0]]
    assert rows[window.candidates].tolist() == [1, 2]  # rank 1 (row 3) is skipped by range_min


def test_padding_is_never_a_known_positive() -> None:
    # query 0 knows row 5, the largest: query 1's padding (-1) must not collide with it
    rows = np.array([[5, 3], [2, -1]])
    assert known_mask(rows, np.array([0]), np.array([5])).tolist() == [
        [True, False],
        [False, False],
    ]
    with pytest.raises(ValueError, match="pair up"):
        known_mask(rows, np.array([0, 1]), np.array([5]))
    with pytest.raises(ValueError, match="2 queries"):
        known_mask(rows, np.array([2]), np.array([5]))


def test_margin_thresholds() -> None:
    reference = np.array([0.8, -0.2, 0.0])
    assert margin_thresholds(reference, 0.0, "relative") is None
    np.testing.assert_allclose(margin_thresholds(reference, 0.1, "relative"), [0.72, -0.2, 0.0])
    np.testing.assert_allclose(margin_thresholds(reference, 0.1, "absolute"), [0.7, -0.3, -0.1])
    with pytest.raises(ValueError, match="margin_type"):
        margin_thresholds(reference, 0.1, "ratio")


def test_bad_arguments_are_named() -> None:
    rows = np.zeros((2, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="same shape"):
        select_window(
            rows, np.zeros((2, 4)), np.zeros((2, 3), bool), range_min=0, range_max=2, threshold=None
        )
    with pytest.raises(ValueError, match="threshold"):
        select_window(
            rows,
            np.zeros((2, 3)),
            np.zeros((2, 3), bool),
            range_min=0,
            range_max=2,
            threshold=np.zeros(3),
        )
    candidates = np.ones((2, 3), dtype=bool)
    with pytest.raises(ValueError, match="sampling"):
        take_negatives(candidates, 1, sampling="best", rng=None)
    with pytest.raises(ValueError, match="Generator"):
        take_negatives(candidates, 1, sampling="random", rng=None)
