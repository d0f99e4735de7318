"""Rank a catalog with a model's vectors: the one place that does it.

Evaluation, the online loop's gate and mining, the service and experiments all turn "query
vectors + the catalog's item vectors" into a ranking here:

* :class:`CatalogRanker` holds the item vectors in an exact index, built once; the service
  keeps one per model and calls :meth:`CatalogRanker.search` per request.
* :func:`rank_catalog` ranks query vectors into a run (query id -> ``[(product id, score)]``).
* :func:`encode_and_rank` encodes the query texts (and the item texts, unless their vectors
  are given) with an :class:`~shopaug.encoders.base.Encoder` first.

Every entry point takes an optional **row subset** (``rows``: catalog positions); only those
products are ranked, ties broken by catalog order.

Example:
    >>> items = np.eye(3, dtype=np.float32)
    >>> rank_catalog(items[[2]], items, ["a", "b", "c"], query_ids=["q"], depth=2)
    {'q': [('c', 1.0), ('a', 0.0)]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from shopaug.encoders.base import Encoder
from shopaug.index.vector import VectorIndex

#: query id -> [(product id, score)], best first.
Run = dict[str, list[tuple[str, float]]]


class CatalogRanker:
    """Exact inner-product ranking of a catalog's item vectors.

    Args:
        item_vectors: L2-normalised item embeddings ``(n_items, dim)``, catalog order.
        product_ids: the catalog's product ids, one per row of ``item_vectors``.

    Raises:
        ValueError: the vectors are not 2-D or not one per product id.
    """

    def __init__(self, item_vectors: np.ndarray, product_ids: Sequence[str]) -> None:
        if item_vectors.ndim != 2 or item_vectors.shape[0] != len(product_ids):
            raise ValueError(
                f"item vectors have shape {item_vectors.shape} for {len(product_ids)} product "
                "ids; expected (n_products, dim)"
            )
        vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        vectors.setflags(write=False)
        self.item_vectors = vectors  # (n_items, dim)
        self.product_ids = tuple(product_ids)
        self._index = VectorIndex(vectors)

    @property
    def size(self) -> int:
        """Number of products."""
        return len(self.product_ids)

    def search(
        self, query_vectors: np.ndarray, depth: int, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``depth`` catalog rows and scores per query, each ``(n_queries, depth)``.

        Args:
            query_vectors: ``(n_queries, dim)`` or one query ``(dim,)``.
            depth: results per query; ``-1`` rows (score ``-inf``) pad short lists.
            rows: rank only these catalog rows (ties: catalog order); None: all of them.
        """
        queries = np.ascontiguousarray(np.atleast_2d(query_vectors), dtype=np.float32)
        if rows is None:
            return self._index.search(queries, depth)
        return _subset_top_k(self.item_vectors, queries, np.asarray(rows, dtype=np.int64), depth)

    def run(
        self,
        query_ids: Sequence[str],
        query_vectors: np.ndarray,
        *,
        depth: int,
        rows: np.ndarray | None = None,
    ) -> Run:
        """:meth:`search` as a run: query id -> ``[(product id, score)]``, best first."""
        if len(query_ids) != np.atleast_2d(query_vectors).shape[0]:
            raise ValueError(
                f"{len(query_ids)} query ids for {np.atleast_2d(query_vectors).shape[0]} "
                "query vectors; expected one vector per id"
            )
        found, scores = self.search(query_vectors, depth, rows)
        return {
            str(qid): [
                (self.product_ids[int(row)], float(score))
                for row, score in zip(found_rows, found_scores)
                if row >= 0
            ]
            for qid, found_rows, found_scores in zip(query_ids, found, scores)
        }


def rank_catalog(
    query_vectors: np.ndarray,
    item_vectors: np.ndarray,
    product_ids: Sequence[str],
    *,
    query_ids: Sequence[str],
    depth: int,
    rows: np.ndarray | None = None,
) -> Run:
    """Rank the catalog (or its ``rows``) for each query vector.

    Args:
        query_vectors: ``(n_queries, dim)``, one per id of ``query_ids``.
        item_vectors: ``(n_items, dim)``, one per id of ``product_ids`` (the whole catalog).
        product_ids: the catalog's product ids.
        query_ids: the run's keys.
        depth: products per query.
        rows: rank only these catalog positions; None: the whole catalog.

    Returns:
        query id -> ``[(product id, score)]``, best first.
    """
    ranker = CatalogRanker(item_vectors, product_ids)
    return ranker.run(query_ids, query_vectors, depth=depth, rows=rows)


def encode_and_rank(
    encoder: Encoder,
    queries: Mapping[str, str],
    item_texts: Sequence[str],
    product_ids: Sequence[str],
    *,
    depth: int,
    rows: np.ndarray | None = None,
    item_vectors: np.ndarray | None = None,
) -> Run:
    """Encode ``queries`` (query id -> text) with ``encoder`` and rank the catalog for them.

    Args:
        encoder: encodes queries and, without ``item_vectors``, the items.
        queries: query id -> text; the run keeps this order.
        item_texts: the catalog's texts (only ``rows`` of them are encoded when given).
        product_ids: the catalog's product ids, one per text.
        depth: products per query.
        rows: rank only these catalog positions; None: the whole catalog.
        item_vectors: the whole catalog's vectors when already encoded (``item_texts`` is then
            not encoded).
    """
    if len(item_texts) != len(product_ids):
        raise ValueError(f"{len(item_texts)} item texts for {len(product_ids)} product ids")
    query_ids = list(queries)
    query_vectors = encoder.encode([queries[qid] for qid in query_ids])  # (n_queries, dim)
    if item_vectors is not None:
        return rank_catalog(
            query_vectors, item_vectors, product_ids, query_ids=query_ids, depth=depth, rows=rows
        )
    if rows is None:
        vectors = encoder.encode(list(item_texts))  # (n_items, dim)
        return rank_catalog(query_vectors, vectors, product_ids, query_ids=query_ids, depth=depth)
    subset = np.asarray(rows, dtype=np.int64)
    vectors = encoder.encode([item_texts[int(r)] for r in subset])  # (n_rows, dim)
    subset_ids = [product_ids[int(r)] for r in subset]
    return rank_catalog(query_vectors, vectors, subset_ids, query_ids=query_ids, depth=depth)


def _subset_top_k(
    vectors: np.ndarray, queries: np.ndarray, rows: np.ndarray, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``depth`` of ``rows`` per query; ties by catalog row, -1 pads."""
    n = queries.shape[0]
    found = np.full((n, depth), -1, dtype=np.int64)
    found_scores = np.full((n, depth), -np.inf, dtype=np.float32)
    top = min(depth, rows.size)
    if n == 0 or top == 0:
        return found, found_scores
    scores = queries @ vectors[rows].T  # (n_queries, n_rows)
    if top < rows.size:
        part = np.argpartition(-scores, top - 1, axis=1)[:, :top]  # (n_queries, top)
    else:
        part = np.tile(np.arange(rows.size), (n, 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((rows[part], -part_scores), axis=1)  # score desc, then catalog row
    chosen = np.take_along_axis(part, order, axis=1)
    found[:, :top] = rows[chosen]
    found_scores[:, :top] = np.take_along_axis(part_scores, order, axis=1)
    return found, found_scores
