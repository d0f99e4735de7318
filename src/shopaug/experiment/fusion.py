"""A trained bi-encoder fused with BM25: reciprocal-rank fusion and a convex score fusion.

Both work on runs (query id -> ranked ``[(product id, score)]``): RRF scores a product
``sum_r 1 / (k + rank_r)``; the convex fusion scores it ``w * dense + (1 - w) * bm25`` after
min-max normalising each run's scores per query (a product missing from one run gets 0 there).
The convex weight is picked on validation queries, never on the queries a figure reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Run = dict[str, list[tuple[str, float]]]


def rrf_fuse(runs: Sequence[Run], *, depth: int, rrf_k: float = 60.0) -> Run:
    """Reciprocal-rank fusion (Cormack et al. 2009) of ``runs``, ties broken by product id."""
    fused: Run = {}
    for qid in runs[0]:
        scores: dict[str, float] = {}
        for run in runs:
            for rank, (pid, _) in enumerate(run.get(qid, []), start=1):
                scores[pid] = scores.get(pid, 0.0) + 1.0 / (rrf_k + rank)
        fused[qid] = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:depth]
    return fused


def _normalised(ranked: list[tuple[str, float]]) -> dict[str, float]:
    if not ranked:
        return {}
    values = [score for _, score in ranked]
    low, high = min(values), max(values)
    span = high - low
    return {pid: (score - low) / span if span > 0 else 1.0 for pid, score in ranked}


def convex_fuse(dense: Run, bm25: Run, *, weight: float, depth: int) -> Run:
    """``weight * dense + (1 - weight) * bm25`` of per-query min-max normalised scores."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    fused: Run = {}
    for qid in dense:
        a, b = _normalised(dense.get(qid, [])), _normalised(bm25.get(qid, []))
        scores = {
            pid: weight * a.get(pid, 0.0) + (1.0 - weight) * b.get(pid, 0.0) for pid in a.keys() | b
        }
        fused[qid] = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:depth]
    return fused


def pick_weight(
    dense: Run,
    bm25: Run,
    *,
    weights: Sequence[float],
    depth: int,
    score: Callable[[Run], float],
) -> float:
    """The weight of ``weights`` whose convex fusion scores best (``score`` reads validation
    queries only); the smallest weight wins a tie."""
    best_weight, best_value = weights[0], float("-inf")
    for weight in weights:
        value = score(convex_fuse(dense, bm25, weight=weight, depth=depth))
        if value > best_value + 1e-12:
            best_weight, best_value = weight, value
    return float(best_weight)
