"""Ranking metrics as pure functions over gain matrices, and :func:`evaluate_run` over ids.

Every metric is a keyword-only function that takes the gains of the retrieved products in rank
order and returns one value per query (averaging is the caller's choice). The definitions are
those of trec_eval and ranx, and the tests cross-check every metric against both ranx and
ir-measures:

==============  ===============================================================================
``ndcg@k``      linear gains (Järvelin & Kekäläinen): ``DCG@k = sum_i gain_i / log2(i + 1)``,
                divided by the DCG@k of the ideal ordering of all judged products (trec_eval
                ``ndcg_cut``, ranx ``ndcg``; not the ``2**gain - 1`` form of ranx
                ``ndcg_burges``).
``recall@k``    relevant products in the top k / all relevant judged products.
``precision@k`` relevant products in the top k / k (a ranking shorter than k is not rescued).
``mrr@k``       1 / rank of the first relevant product in the top k, 0 when there is none.
``map@k``       sum of precision@i over the ranks i <= k holding a relevant product, divided
                by all relevant judged products (trec_eval ``map_cut``, ranx ``map@k``).
==============  ===============================================================================

The binary metrics treat a gain > 0 as relevant. A query with no relevant judged product scores
0 on every metric.

Example:
    >>> import numpy as np
    >>> relevance = np.array([[0.0, 2.0, 1.0]])  # (n_queries, depth), gains in rank order
    >>> mrr_at_k(relevance=relevance, k=10)
    array([0.5])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from shopaug.errors import DataError

logger = logging.getLogger(__name__)

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10", "map@100")


def _as_matrix(name: str, values: np.ndarray) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_queries, depth), got shape {matrix.shape}")
    return matrix


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def _as_counts(n_relevant: np.ndarray, n_queries: int) -> np.ndarray:
    counts = np.asarray(n_relevant, dtype=np.float64)
    if counts.shape != (n_queries,):
        raise ValueError(
            f"n_relevant must have shape ({n_queries},) to match relevance, got {counts.shape}"
        )
    return counts


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` with 0 where the denominator is 0."""
    out = np.zeros_like(numerator, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _discounts(length: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, length + 2, dtype=np.float64))  # (length,)


def dcg_at_k(*, relevance: np.ndarray, k: int) -> np.ndarray:
    """Discounted cumulative gain with linear gains, ``sum_{i<=k} gain_i / log2(i + 1)``.

    Args:
        relevance: Gains of the retrieved products in rank order, shape ``(n_queries, depth)``,
            0-padded; columns past ``k`` are ignored.
        k: Cut-off rank (>= 1).

    Returns:
        DCG@k per query, shape ``(n_queries,)``.
    """
    _check_k(k)
    top = _as_matrix("relevance", relevance)[:, :k]  # (n_queries, min(k, depth))
    return top @ _discounts(top.shape[1])


def ndcg_at_k(*, relevance: np.ndarray, ideal: np.ndarray, k: int) -> np.ndarray:
    """Normalised DCG@k with linear gains (trec_eval ``ndcg_cut``, ranx ``ndcg``).

    Args:
        relevance: Gains of the retrieved products in rank order, shape ``(n_queries, depth)``.
        ideal: Gains of all judged products of each query sorted descending, shape
            ``(n_queries, n)``, 0-padded; only the first ``k`` columns matter.
        k: Cut-off rank (>= 1).

    Returns:
        nDCG@k per query in [0, 1]; 0 for a query whose ideal DCG is 0.

    Example:
        >>> ndcg_at_k(relevance=np.array([[0.0, 1.0]]), ideal=np.array([[1.0]]), k=2)
        array([0.63092975])
    """
    relevance = _as_matrix("relevance", relevance)
    ideal = _as_matrix("ideal", ideal)
    if ideal.shape[0] != relevance.shape[0]:
        raise ValueError(
            f"ideal has {ideal.shape[0]} rows but relevance has {relevance.shape[0]}; "
            "both need one row per query"
        )
    return _safe_divide(dcg_at_k(relevance=relevance, k=k), dcg_at_k(relevance=ideal, k=k))


def precision_at_k(*, relevance: np.ndarray, k: int) -> np.ndarray:
    """Relevant products (gain > 0) in the top ``k``, divided by ``k``.

    Args:
        relevance: Gains in rank order, shape ``(n_queries, depth)``.
        k: Cut-off rank (>= 1). A ranking shorter than ``k`` still divides by ``k``.

    Returns:
        Precision@k per query.
    """
    _check_k(k)
    hits = _as_matrix("relevance", relevance)[:, :k] > 0
    return hits.sum(axis=1) / float(k)


def recall_at_k(*, relevance: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Relevant products in the top ``k``, divided by all relevant judged products.

    Args:
        relevance: Gains in rank order, shape ``(n_queries, depth)``.
        n_relevant: Number of judged products with gain > 0 per query, shape ``(n_queries,)``.
        k: Cut-off rank (>= 1).

    Returns:
        Recall@k per query; 0 where ``n_relevant`` is 0.
    """
    _check_k(k)
    relevance = _as_matrix("relevance", relevance)
    counts = _as_counts(n_relevant, relevance.shape[0])
    hits = (relevance[:, :k] > 0).sum(axis=1).astype(np.float64)
    return _safe_divide(hits, counts)


def mrr_at_k(*, relevance: np.ndarray, k: int) -> np.ndarray:
    """Reciprocal rank of the first relevant product within the top ``k`` (0 if none).

    Args:
        relevance: Gains in rank order, shape ``(n_queries, depth)``.
        k: Cut-off rank (>= 1).

    Returns:
        Reciprocal rank per query; its mean is the MRR.
    """
    _check_k(k)
    hits = _as_matrix("relevance", relevance)[:, :k] > 0  # (n_queries, min(k, depth))
    if hits.shape[1] == 0:
        return np.zeros(hits.shape[0])
    first = hits.argmax(axis=1)  # index of the first True, 0 when there is none
    return np.where(hits.any(axis=1), 1.0 / (first + 1.0), 0.0)


def average_precision_at_k(*, relevance: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Average precision cut at ``k`` (trec_eval ``map_cut``, ranx ``map@k``).

    ``AP@k = sum_{i<=k, gain_i>0} precision@i / n_relevant``: the denominator counts every
    relevant judged product, not only those retrieved, so a short ranking is not rewarded.

    Args:
        relevance: Gains in rank order, shape ``(n_queries, depth)``.
        n_relevant: Number of judged products with gain > 0 per query, shape ``(n_queries,)``.
        k: Cut-off rank (>= 1).

    Returns:
        AP@k per query; its mean is MAP@k. 0 where ``n_relevant`` is 0.
    """
    _check_k(k)
    relevance = _as_matrix("relevance", relevance)
    counts = _as_counts(n_relevant, relevance.shape[0])
    hits = (relevance[:, :k] > 0).astype(np.float64)  # (n_queries, min(k, depth))
    ranks = np.arange(1, hits.shape[1] + 1, dtype=np.float64)
    precision_at_hits = np.cumsum(hits, axis=1) / ranks * hits
    return _safe_divide(precision_at_hits.sum(axis=1), counts)


@dataclass(frozen=True)
class _MetricInputs:
    relevance: np.ndarray  # (n_queries, depth)
    ideal: np.ndarray  # (n_queries, depth)
    n_relevant: np.ndarray  # (n_queries,)


_REGISTRY: dict[str, Callable[[_MetricInputs, int], np.ndarray]] = {
    "ndcg": lambda m, k: ndcg_at_k(relevance=m.relevance, ideal=m.ideal, k=k),
    "recall": lambda m, k: recall_at_k(relevance=m.relevance, n_relevant=m.n_relevant, k=k),
    "precision": lambda m, k: precision_at_k(relevance=m.relevance, k=k),
    "mrr": lambda m, k: mrr_at_k(relevance=m.relevance, k=k),
    "map": lambda m, k: average_precision_at_k(relevance=m.relevance, n_relevant=m.n_relevant, k=k),
}


def metric_names() -> tuple[str, ...]:
    """Base names :func:`evaluate_run` accepts, each used as ``"name@k"`` (e.g. ``"ndcg@10"``)."""
    return tuple(_REGISTRY)


def parse_metric_name(metric: str) -> tuple[str, int]:
    """Split ``"name@k"`` into its base name and cut-off.

    Args:
        metric: A name such as ``"ndcg@10"``; the base name is case-insensitive.

    Returns:
        ``(name, k)``, e.g. ``("ndcg", 10)``.

    Raises:
        ValueError: The base name is unknown, or ``k`` is missing or not a positive integer.
    """
    name, at, cutoff = metric.strip().lower().partition("@")
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown metric {metric!r}; expected one of {', '.join(_REGISTRY)} as 'name@k'"
        )
    if not at or not cutoff.isdigit() or int(cutoff) < 1:
        raise ValueError(f"metric {metric!r} needs a positive cut-off, e.g. '{name}@10'")
    return name, int(cutoff)


_Judgments = TypeVar("_Judgments", bound=Mapping[str, float])


def queries_with_relevant(qrels: Mapping[str, _Judgments]) -> dict[str, _Judgments]:
    """The judgments of the queries that have at least one product of gain > 0.

    A query without a relevant product scores 0 on every metric whatever the ranking, so it
    cannot tell rankers apart; restrict ``qrels`` with this before scoring a variant whose
    gains leave many queries without one (e.g. WANDS Exact-only, where about half the queries
    have no Exact product).

    Example:
        >>> sorted(queries_with_relevant({"q1": {"p1": 1}, "q2": {"p2": 0}}))
        ['q1']
    """
    return {
        query_id: judgments
        for query_id, judgments in qrels.items()
        if any(float(gain) > 0 for gain in judgments.values())
    }


def _gains_of(query_id: str, judgments: Mapping[str, float]) -> dict[str, float]:
    gains: dict[str, float] = {}
    for product_id, gain in judgments.items():
        value = float(gain)
        if not math.isfinite(value) or value < 0:
            raise DataError(
                f"query {query_id!r}, product {product_id!r}: gain must be a finite number "
                f">= 0, got {gain!r}",
                field="gain",
            )
        gains[product_id] = value
    return gains


def _ranked_gains(
    query_id: str,
    ranking: Sequence[tuple[str, float]],
    gains: Mapping[str, float],
    *,
    depth: int,
    judged_only: bool,
) -> list[float]:
    seen: set[str] = set()
    out: list[float] = []
    for position, entry in enumerate(ranking, start=1):
        if isinstance(entry, str) or len(entry) != 2 or not isinstance(entry[0], str):
            raise DataError(
                f"query {query_id!r}, rank {position}: expected a (product id, score) pair, "
                f"got {entry!r}",
                field="run",
            )
        product_id = entry[0]
        if product_id in seen:
            raise DataError(
                f"query {query_id!r}: product {product_id!r} appears twice in the ranking",
                field="product_id",
            )
        seen.add(product_id)
        if judged_only and product_id not in gains:
            continue
        if len(out) < depth:
            out.append(gains.get(product_id, 0.0))
    return out


def evaluate_run(
    run: Mapping[str, Sequence[tuple[str, float]]],
    qrels: Mapping[str, Mapping[str, float]],
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    judged_only: bool = False,
    query_ids: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Score a run against graded judgments, one value per query and metric.

    Args:
        run: Query id -> ``[(product id, score), ...]`` in rank order (best first). The order
            is what counts; scores are not used to re-sort. A product may appear once per query.
        qrels: Query id -> ``{product id: gain}``; judged-irrelevant products have gain 0.
            Gains must be finite and >= 0. Products absent from a query's judgments are
            unjudged and count as gain 0.
        metrics: Names ``"name@k"`` with a name from :func:`metric_names`.
        judged_only: Drop unjudged products from each ranking before cutting it at ``k``
            (the "judged-only" variant, which does not punish a ranker for unjudged results).
        query_ids: The queries to score, in the order of the returned arrays. Default: the
            sorted query ids of ``qrels`` with at least one product of gain > 0 (queries
            without a relevant product cannot tell rankers apart). Every id must be in
            ``qrels``; an id missing from ``run`` scores 0 (a warning is logged).

    Returns:
        Metric name (as given) -> per-query array of shape ``(len(query_ids),)``.

    Raises:
        ValueError: An unknown metric name.
        DataError: A query id not in ``qrels``, a negative or non-finite gain, or a product
            ranked twice for one query.

    Example:
        >>> run = {"q1": [("p2", 0.9), ("p1", 0.5)]}
        >>> qrels = {"q1": {"p1": 1, "p3": 0}}
        >>> evaluate_run(run, qrels, metrics=["mrr@10"])["mrr@10"]
        array([0.5])
    """
    parsed = [parse_metric_name(metric) for metric in metrics]
    if not parsed:
        raise ValueError("metrics is empty; name at least one, e.g. 'ndcg@10'")
    depth = max(k for _, k in parsed)
    if query_ids is None:
        query_ids = sorted(queries_with_relevant(qrels))
    else:
        unknown = [query_id for query_id in query_ids if query_id not in qrels]
        if unknown:
            raise DataError(
                f"{len(unknown)} query id(s) have no judgments in qrels, e.g. {unknown[:3]}",
                field="query_id",
            )

    n_queries = len(query_ids)
    relevance = np.zeros((n_queries, depth))
    ideal = np.zeros((n_queries, depth))
    n_relevant = np.zeros(n_queries)
    missing = 0
    for row, query_id in enumerate(query_ids):
        gains = _gains_of(query_id, qrels[query_id])
        best = sorted(gains.values(), reverse=True)[:depth]
        ideal[row, : len(best)] = best
        n_relevant[row] = sum(1 for gain in gains.values() if gain > 0)
        if query_id not in run:
            missing += 1
            continue
        ranked = _ranked_gains(query_id, run[query_id], gains, depth=depth, judged_only=judged_only)
        relevance[row, : len(ranked)] = ranked
    if missing:
        logger.warning("%d of %d evaluated queries are missing from the run", missing, n_queries)
    extra = len(set(run) - set(query_ids))
    if extra:
        logger.info("%d run queries are not among the evaluated queries and are ignored", extra)

    inputs = _MetricInputs(relevance=relevance, ideal=ideal, n_relevant=n_relevant)
    return {
        metric: _REGISTRY[name](inputs, k)
        for metric, (name, k) in zip(metrics, parsed, strict=True)
    }
