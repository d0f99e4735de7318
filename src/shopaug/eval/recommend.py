"""Next-basket recommendation metrics: per-customer accuracy, exposure, and the new-item segment.

A recommender ranks the catalog for each customer; the customer's next basket (a set of items)
is what counts as relevant. Every function takes a ranked list of item ids per customer, so any
system (ours, ``implicit``, RecBole) is measured by the same code:

======================  ====================================================================
``recall@k``            basket items in the top k / basket size (:func:`metrics.recall_at_k`)
``ndcg@k``              binary gains, ideal = min(basket size, k) hits at the top
                        (:func:`metrics.ndcg_at_k`)
``mrr``                 1 / rank of the first basket item in the whole ranked list, 0 if none
``tail_share@k``        share of a customer's top k that is in the popularity tail (the 80 % of
                        catalog items with the fewest training purchases)
``new_recall@k``        only customers whose basket holds a new item (first sold after the
                        cut): new basket items in the top k / new basket items
``repeat_recall@k``,    only customers whose basket holds an item they bought before the cut:
``repeat_ndcg@k``       recall and NDCG against those basket items alone (the rest of the
                        basket is not relevant; the ranked list is unchanged)
``explore_recall@k``,   the same against the basket items new to the customer (never bought
``explore_ndcg@k``      by them before the cut; new items included): where repeat purchase
                        scores 0. The split of Li et al., "A Next Basket Recommendation
                        Reality Check" (TOIS 2023)
``repeat_share@k``      share of a customer's top k that they bought before the cut
``coverage@k``          run level: distinct items in any top k / catalog size
``gini@k``              run level: Gini coefficient of how often each catalog item is in a
                        top k (0 even, near 1 concentrated on few items)
``new_share@k``         run level: share of all top-k slots held by new items
======================  ====================================================================

Per-customer metrics get a percentile bootstrap interval over customers
(:func:`shopaug.eval.significance.bootstrap_interval`).

Example:
    >>> scores = per_customer_metrics(ranked=[["a", "b", "c"]], baskets=[{"b", "z"}], k=2)
    >>> scores["recall@2"], scores["mrr"]
    (array([0.5]), array([0.5]))
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shopaug.eval.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from shopaug.eval.segments import TAIL, coverage, gini, popularity_segments
from shopaug.eval.significance import bootstrap_interval

DEFAULT_K = 20
HEAD_SHARE = 0.2


def _relevance(
    ranked: Sequence[Sequence[str]], baskets: Sequence[Collection[str]]
) -> tuple[np.ndarray, np.ndarray]:
    """``(n, depth)`` 0/1 hits of each ranked list against its basket, and basket sizes."""
    if len(ranked) != len(baskets):
        raise ValueError(f"{len(ranked)} ranked lists but {len(baskets)} baskets")
    depth = max((len(items) for items in ranked), default=0)
    relevance = np.zeros((len(ranked), max(depth, 1)))
    for row, (items, basket) in enumerate(zip(ranked, baskets, strict=True)):
        relevance[row, : len(items)] = [item in basket for item in items]
    sizes = np.array([len(basket) for basket in baskets], dtype=np.float64)
    return relevance, sizes


def per_customer_metrics(
    *,
    ranked: Sequence[Sequence[str]],
    baskets: Sequence[Collection[str]],
    k: int = DEFAULT_K,
) -> dict[str, np.ndarray]:
    """``recall@k``, ``ndcg@k`` and ``mrr`` per customer.

    Args:
        ranked: Item ids in rank order, one list per customer.
        baskets: The customer's next basket, same order.
        k: Cut-off.

    Returns:
        Metric name -> ``(n_customers,)`` values.
    """
    relevance, sizes = _relevance(ranked, baskets)
    ideal = (np.arange(k)[None, :] < sizes[:, None]).astype(np.float64)  # (n, k)
    return {
        f"recall@{k}": recall_at_k(relevance=relevance, n_relevant=sizes, k=k),
        f"ndcg@{k}": ndcg_at_k(relevance=relevance, ideal=ideal, k=k),
        "mrr": mrr_at_k(relevance=relevance, k=relevance.shape[1]),
    }


def tail_share_per_customer(
    *, ranked: Sequence[Sequence[str]], segments: Mapping[str, str], k: int = DEFAULT_K
) -> np.ndarray:
    """Share of each customer's top ``k`` in the tail (items missing from ``segments`` count as
    tail: they had no training purchase)."""
    return np.array(
        [
            np.mean([segments.get(item, TAIL) == TAIL for item in items[:k]]) if items else 0.0
            for items in ranked
        ]
    )


def restricted_metrics(
    *,
    ranked: Sequence[Sequence[str]],
    baskets: Sequence[Collection[str]],
    relevant: Sequence[Collection[str]],
    k: int = DEFAULT_K,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Recall@k and NDCG@k against only the items of each basket in ``relevant[row]``, for the
    customers whose basket holds at least one of them (:func:`per_customer_metrics` on the
    restricted baskets; the ranked lists are unchanged).

    Args:
        ranked: Item ids in rank order, one list per customer.
        baskets: The customer's next basket, same order.
        relevant: Per customer, the items that count (e.g. what they bought before the cut).
        k: Cut-off.

    Returns:
        ``(rows, {"recall@k": values, "ndcg@k": values})``: the indices in ``ranked`` of the
        customers measured and their values.

    Example:
        >>> rows, values = restricted_metrics(
        ...     ranked=[["a", "b"], ["a"]], baskets=[{"b", "c"}, {"c"}],
        ...     relevant=[{"b"}, {"a"}], k=2)
        >>> rows.tolist(), values["recall@2"].tolist()
        ([0], [1.0])
    """
    if not len(ranked) == len(baskets) == len(relevant):
        raise ValueError(
            f"{len(ranked)} ranked lists, {len(baskets)} baskets, {len(relevant)} relevant sets"
        )
    kept = [set(basket) & set(items) for basket, items in zip(baskets, relevant, strict=True)]
    rows = [row for row, basket in enumerate(kept) if basket]
    names = (f"recall@{k}", f"ndcg@{k}")
    if not rows:
        return np.zeros(0, dtype=np.int64), {name: np.zeros(0) for name in names}
    values = per_customer_metrics(
        ranked=[ranked[row] for row in rows], baskets=[kept[row] for row in rows], k=k
    )
    return np.array(rows, dtype=np.int64), {name: values[name] for name in names}


def new_item_recall(
    *,
    ranked: Sequence[Sequence[str]],
    baskets: Sequence[Collection[str]],
    new_items: Collection[str],
    k: int = DEFAULT_K,
) -> tuple[np.ndarray, np.ndarray]:
    """Recall@k of new items, for the customers whose basket holds at least one.

    Returns:
        ``(rows, values)``: the indices of those customers in ``ranked`` and their recall.
    """
    new = frozenset(new_items)
    rows, values = restricted_metrics(
        ranked=ranked, baskets=baskets, relevant=[new] * len(baskets), k=k
    )
    return rows, values[f"recall@{k}"]


def repeat_explore_metrics(
    *,
    ranked: Sequence[Sequence[str]],
    baskets: Sequence[Collection[str]],
    bought: Sequence[Collection[str]],
    k: int = DEFAULT_K,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Recall@k and NDCG@k split into repeat and explore items (Li et al., TOIS 2023), and the
    share of each top k that is repeats.

    Args:
        ranked: Item ids in rank order, one list per customer.
        baskets: The customer's next basket, same order.
        bought: Per customer, every item they bought before the cut.
        k: Cut-off.

    Returns:
        Metric name -> ``(rows, values)``: ``repeat_recall@k`` and ``repeat_ndcg@k`` over the
        customers whose basket holds an item of ``bought``; ``explore_recall@k`` and
        ``explore_ndcg@k`` over those whose basket holds an item outside it; ``repeat_share@k``
        over every customer.
    """
    explore = [set(basket) - set(own) for basket, own in zip(baskets, bought, strict=True)]
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for part, relevant in (("repeat", bought), ("explore", explore)):
        rows, values = restricted_metrics(ranked=ranked, baskets=baskets, relevant=relevant, k=k)
        for name, per_row in values.items():
            out[f"{part}_{name}"] = (rows, per_row)
    shares = [
        float(np.mean([item in own for item in items[:k]])) if len(items) else 0.0
        for items, own in zip(ranked, (set(b) for b in bought), strict=True)
    ]
    out[f"repeat_share@{k}"] = (np.arange(len(ranked), dtype=np.int64), np.array(shares))
    return out


def exposure_metrics(
    *,
    ranked: Sequence[Sequence[str]],
    catalog: Sequence[str],
    new_items: Collection[str] = (),
    k: int = DEFAULT_K,
) -> dict[str, float]:
    """Run-level ``coverage@k``, ``gini@k`` and ``new_share@k`` over the catalog."""
    index = {item: row for row, item in enumerate(catalog)}
    counts = np.zeros(len(catalog))
    new = set(new_items)
    slots = new_slots = 0
    for items in ranked:
        for item in items[:k]:
            if item not in index:
                raise ValueError(f"recommended item {item!r} is not in the catalog")
            counts[index[item]] += 1
            slots += 1
            new_slots += item in new
    run = {str(row): [(item, 0.0) for item in items] for row, items in enumerate(ranked)}
    return {
        f"coverage@{k}": coverage(run, len(catalog), k) if ranked else 0.0,
        f"gini@{k}": gini(counts),
        f"new_share@{k}": new_slots / slots if slots else 0.0,
    }


@dataclass(frozen=True)
class BasketTruth:
    """What a ranking is measured against: baskets, the catalog, popularity and new items.

    Attributes:
        baskets: Customer id -> next basket.
        catalog: Every item a system may recommend.
        popularity: Item id -> training purchases (defines head and tail; absent = 0).
        new_items: Items first sold after the cut.
        bought: Customer id -> every item they bought before the cut (absent = nothing): what
            splits a basket into repeat and explore items.
    """

    baskets: Mapping[str, Collection[str]]
    catalog: Sequence[str]
    popularity: Mapping[str, float]
    new_items: Collection[str] = ()
    bought: Mapping[str, Collection[str]] = field(default_factory=dict)

    def segments(self) -> dict[str, str]:
        counts = {item: float(self.popularity.get(item, 0.0)) for item in self.catalog}
        return popularity_segments(counts, head_share=HEAD_SHARE)


def evaluate_recommendations(
    ranked: Mapping[str, Sequence[str]],
    truth: BasketTruth,
    *,
    k: int = DEFAULT_K,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric of this module for one system, with bootstrap intervals over customers.

    Args:
        ranked: Customer id -> item ids in rank order; every customer of ``truth.baskets`` must
            be present (a system that cannot rank for one still returns a list, e.g. popular
            items).
        truth: Baskets, catalog, popularity and new items.
        k: Cut-off.
        n_resamples: Bootstrap resamples.
        seed: Bootstrap seed.

    Returns:
        ``{"metrics": {name: {"mean", "ci95"}}, "exposure": {...}, "per_customer": {name:
        {customer: value}}, "customers": n, "new_item_customers": m, "repeat_customers": r,
        "explore_customers": e}``.

    Raises:
        ValueError: A customer of the baskets has no ranked list.
    """
    customers = sorted(truth.baskets)
    missing = [c for c in customers if c not in ranked]
    if missing:
        raise ValueError(f"{len(missing)} customer(s) have no ranked list, e.g. {missing[:3]}")
    lists = [list(ranked[c]) for c in customers]
    baskets = [truth.baskets[c] for c in customers]
    values = per_customer_metrics(ranked=lists, baskets=baskets, k=k)
    values[f"tail_share@{k}"] = tail_share_per_customer(
        ranked=lists, segments=truth.segments(), k=k
    )
    per_customer = {name: dict(zip(customers, v.tolist())) for name, v in values.items()}
    rows, new_values = new_item_recall(
        ranked=lists, baskets=baskets, new_items=truth.new_items, k=k
    )
    per_customer[f"new_recall@{k}"] = {
        customers[row]: value for row, value in zip(rows.tolist(), new_values.tolist())
    }
    split = repeat_explore_metrics(
        ranked=lists, baskets=baskets, bought=[truth.bought.get(c, ()) for c in customers], k=k
    )
    for name, (measured, part_values) in split.items():
        per_customer[name] = {
            customers[row]: value for row, value in zip(measured.tolist(), part_values.tolist())
        }
    summaries = {
        name: _summary(list(by_customer.values()), n_resamples=n_resamples, seed=seed)
        for name, by_customer in per_customer.items()
    }
    return {
        "metrics": summaries,
        "exposure": exposure_metrics(
            ranked=lists, catalog=truth.catalog, new_items=truth.new_items, k=k
        ),
        "per_customer": per_customer,
        "customers": len(customers),
        "new_item_customers": int(rows.size),
        "repeat_customers": int(split[f"repeat_recall@{k}"][0].size),
        "explore_customers": int(split[f"explore_recall@{k}"][0].size),
    }


def _summary(values: Sequence[float], *, n_resamples: int, seed: int) -> dict[str, object]:
    if len(values) < 2:
        mean = float(values[0]) if values else None
        return {"mean": mean, "ci95": [None, None], "n": len(values)}
    interval = bootstrap_interval(values, n_resamples=n_resamples, seed=seed)
    return {"mean": interval.mean, "ci95": [interval.low, interval.high], "n": len(values)}
