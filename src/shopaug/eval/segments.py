"""Head/tail segments, catalog coverage and concentration of what a ranker shows.

A ranker can gain nDCG by pushing popular products everywhere; these measures show whether it
does. Products are split by popularity (interactions, judgments or sales: the caller's choice)
into a small ``head`` and a long ``tail``; per-query metrics can then be averaged by segment.

Example:
    >>> segments = popularity_segments({"a": 90, "b": 5, "c": 3, "d": 1, "e": 1}, head_share=0.2)
    >>> segments["a"], segments["b"]
    ('head', 'tail')
    >>> tail_share(["a", "b", "c"], segments)
    0.6666666666666666
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from shopaug.errors import DataError

HEAD = "head"
TAIL = "tail"


def popularity_segments(
    popularity: Mapping[str, float], *, head_share: float = 0.2
) -> dict[str, str]:
    """Label the most popular ``head_share`` of products ``"head"`` and the rest ``"tail"``.

    The head is the top ``ceil(head_share * n_products)`` products by popularity (by count of
    products, not by share of interactions). Ties at the boundary are broken by product id, so
    the split is the same on every machine. Products with popularity 0 belong in ``popularity``
    too, or they cannot be labelled.

    Args:
        popularity: Product id -> popularity (finite, >= 0).
        head_share: Fraction of products in the head, in (0, 1).

    Returns:
        Product id -> ``"head"`` or ``"tail"``.

    Raises:
        ValueError: ``head_share`` outside (0, 1).
        DataError: A negative or non-finite popularity.
    """
    if not 0 < head_share < 1:
        raise ValueError(f"head_share must be in (0, 1), got {head_share}")
    for product_id, value in popularity.items():
        if not math.isfinite(float(value)) or float(value) < 0:
            raise DataError(
                f"product {product_id!r}: popularity must be finite and >= 0, got {value!r}",
                field="popularity",
            )
    ranked = sorted(popularity, key=lambda product_id: (-float(popularity[product_id]), product_id))
    n_head = math.ceil(round(head_share * len(ranked), 9))  # 0.1 * 30 is 3.0000000000000004
    return {product_id: HEAD if rank < n_head else TAIL for rank, product_id in enumerate(ranked)}


def tail_share(product_ids: Iterable[str], segments: Mapping[str, str]) -> float:
    """Fraction of ``product_ids`` (e.g. every top-k result of a run, flattened) in the tail.

    Args:
        product_ids: Products shown; repeats count each time.
        segments: Product id -> ``"head"``/``"tail"`` from :func:`popularity_segments`.

    Returns:
        Tail products / all products, in [0, 1].

    Raises:
        ValueError: ``product_ids`` is empty.
        DataError: A product has no segment (give it popularity 0 instead of leaving it out).
    """
    total = 0
    tail = 0
    for product_id in product_ids:
        if product_id not in segments:
            raise DataError(
                f"product {product_id!r} has no segment; include every catalog product "
                "(popularity 0 for unseen ones) in popularity_segments",
                field="product_id",
            )
        total += 1
        tail += segments[product_id] == TAIL
    if total == 0:
        raise ValueError("product_ids is empty; the tail share of nothing is undefined")
    return tail / total


def coverage(run: Mapping[str, Sequence[tuple[str, float]]], catalog_size: int, k: int) -> float:
    """Catalog coverage: distinct products in any query's top ``k`` / catalog size.

    Args:
        run: Query id -> ``[(product id, score), ...]`` in rank order.
        catalog_size: Number of products that could have been shown (> 0).
        k: Cut-off rank (>= 1).

    Returns:
        Coverage in [0, 1].

    Raises:
        ValueError: ``catalog_size`` or ``k`` not positive.
        DataError: More distinct products than ``catalog_size`` (a wrong catalog size).
    """
    if catalog_size < 1:
        raise ValueError(f"catalog_size must be positive, got {catalog_size}")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    shown = {product_id for ranking in run.values() for product_id, _ in ranking[:k]}
    if len(shown) > catalog_size:
        raise DataError(
            f"the run shows {len(shown)} distinct products in its top {k} but catalog_size is "
            f"{catalog_size}",
            field="catalog_size",
        )
    return len(shown) / catalog_size


def gini(counts: Sequence[float] | np.ndarray) -> float:
    """Gini coefficient of how often each product is shown: 0 = even, near 1 = concentrated.

    ``G = 2 * sum_i i * x_(i) / (n * sum x) - (n + 1) / n`` over the counts sorted ascending
    (``i`` from 1). Pass a count for every catalog product, zeros included, or the
    concentration is understated. With ``n`` products the maximum is ``(n - 1) / n``.

    Args:
        counts: Non-negative counts, one per product.

    Returns:
        The Gini coefficient; 0 when every count is 0.

    Raises:
        ValueError: ``counts`` is empty, not 1-D, negative or not finite.
    """
    values = np.sort(np.asarray(counts, dtype=np.float64))
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"counts must be a non-empty 1-D sequence, got shape {values.shape}")
    if not np.all(np.isfinite(values)) or values[0] < 0:
        raise ValueError("counts must be finite and >= 0")
    total = values.sum()
    if total == 0:
        return 0.0
    n = values.size
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return float(2 * np.dot(ranks, values) / (n * total) - (n + 1) / n)


def mean_by_segment(
    values: Sequence[float] | np.ndarray, labels: Sequence[str]
) -> dict[str, float]:
    """Average per-query values by the segment of each query (e.g. its target's popularity).

    Args:
        values: Per-query metric values, shape ``(n_queries,)``.
        labels: Segment of each query, same length and order.

    Returns:
        Segment -> mean value, segments in sorted order.

    Raises:
        ValueError: Lengths differ.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (len(labels),):
        raise ValueError(f"values has shape {array.shape} but there are {len(labels)} labels")
    names = np.asarray(labels, dtype=object)
    return {str(name): float(array[names == name].mean()) for name in sorted(set(labels))}
