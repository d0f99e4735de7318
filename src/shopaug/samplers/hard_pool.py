"""Negatives from a fixed pool of hard negatives per query, topped up by a fallback sampler."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

import numpy as np

from shopaug.errors import ConfigError, DataError
from shopaug.samplers.base import (
    Exclusions,
    NegativeSample,
    NegativeSampler,
    SamplingError,
    check_request,
)

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


def pool_from_samples(
    samples: pd.DataFrame,
    *,
    query_rows: Mapping[str, int],
    item_rows: Mapping[str, int],
    methods: Collection[str] | None = None,
) -> dict[int, np.ndarray]:
    """The hard pool ``{query_row: item_rows}`` of the negatives in a samples table.

    Args:
        samples: a ``samples.parquet`` frame (see :mod:`shopaug.augment.samples`); only rows
            with ``kind == "negative"`` are used, in table order, duplicates dropped.
        query_rows: ``query_id`` -> query row.
        item_rows: ``product_id`` -> item row.
        methods: keep only negatives whose ``method`` is one of these (e.g. ``{"bm25",
            "dense"}``); ``None`` keeps all.

    Returns:
        One int64 array of item rows per query row that has negatives.

    Raises:
        DataError: naming the column and the first id that has no row, or a missing column.
    """
    for column in ("query_id", "product_id", "kind", "method"):
        if column not in samples.columns:
            raise DataError("the samples table lacks this column", field=column)
    negatives = samples[samples["kind"] == "negative"]
    if methods is not None:
        negatives = negatives[negatives["method"].isin(list(methods))]
    pool: dict[int, list[int]] = {}
    for query_id, product_id in zip(negatives["query_id"], negatives["product_id"], strict=True):
        if query_id not in query_rows:
            raise DataError(f"query id {query_id!r} has no query row", field="query_id")
        if product_id not in item_rows:
            raise DataError(f"product id {product_id!r} has no item row", field="product_id")
        pool.setdefault(query_rows[query_id], []).append(item_rows[product_id])
    return {
        query_row: np.asarray(list(dict.fromkeys(items)), dtype=np.int64)
        for query_row, items in pool.items()
    }


class HardPoolSampler:
    """Negatives drawn uniformly, without replacement, from a fixed hard pool per query row.

    The pool is what mining produced offline (BM25 or dense neighbours that are not relevant,
    LM-written near-misses): the caller reads ``samples.parquet``, maps ids to rows and passes
    ``{query_row: item_rows}``. Hard negatives teach the fine distinctions uniform ones never
    show. When a query's pool, after removing its positives, has fewer than ``n`` items, all of
    them are used and the rest come from ``fallback`` (never repeating a pool item); queries with
    no pool get only fallback negatives. The fallback should be a catalog sampler (uniform,
    popularity or dynamic): it is called on the short rows only.

    A hard pool is not a proposal distribution, so ``log_q`` is 0 everywhere: do not apply the
    logQ correction with this sampler.

    Args:
        pool: ``{query_row: (k,) item rows}``, hardest first or in any order; duplicates are
            dropped.
        fallback: the sampler that tops up short pools; its ``n_items`` is the catalog size.

    Shapes:
        ``query_rows``, ``positive_rows`` ``(batch,)`` -> ``items``, ``log_q`` ``(batch, n)``.

    Example:
        >>> import numpy as np
        >>> from shopaug.samplers import HardPoolSampler, UniformSampler
        >>> pool = {0: np.array([5, 6, 7]), 1: np.array([8])}
        >>> sampler = HardPoolSampler(pool, fallback=UniformSampler(20))
        >>> out = sampler.sample(query_rows=np.array([0, 1]), positive_rows=np.array([1, 2]),
        ...                      n=2, rng=np.random.default_rng(0))
        >>> set(out.items[0].tolist()) <= {5, 6, 7}, 8 in out.items[1]
        (True, True)
    """

    def __init__(self, pool: Mapping[int, np.ndarray], fallback: NegativeSampler) -> None:
        self.fallback = fallback
        n_items = fallback.n_items
        self.pool: dict[int, np.ndarray] = {}
        for query_row, items in pool.items():
            if isinstance(query_row, bool) or not isinstance(query_row, int | np.integer):
                raise ConfigError(f"pool keys must be integer query rows, got {query_row!r}")
            array = np.asarray(items)
            if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
                raise ConfigError(
                    f"pool[{query_row}] must be a 1-D integer array of item rows, "
                    f"got shape {array.shape} dtype {array.dtype}"
                )
            outside = array[(array < 0) | (array >= n_items)]
            if outside.size:
                raise ConfigError(
                    f"pool[{query_row}] holds item rows outside the catalog [0, {n_items}): "
                    f"{outside[:5].tolist()}"
                )
            unique = list(dict.fromkeys(array.astype(np.int64).tolist()))
            self.pool[int(query_row)] = np.asarray(unique, dtype=np.int64)

    @property
    def n_items(self) -> int:
        return self.fallback.n_items

    def sample(
        self,
        *,
        query_rows: np.ndarray,
        positive_rows: np.ndarray,
        n: int,
        rng: np.random.Generator,
        exclude: Exclusions | None = None,
    ) -> NegativeSample:
        """Draw pool negatives per query row; see :class:`NegativeSampler`."""
        request = check_request(
            query_rows=query_rows,
            positive_rows=positive_rows,
            n=n,
            exclude=exclude,
            n_items=self.n_items,
        )
        items = np.empty((request.batch_size, request.n), dtype=np.int64)
        empty = np.empty(0, dtype=np.int64)
        # Rows whose pool is short, grouped by how many fallback negatives they need.
        short: dict[int, list[int]] = {}
        taken: list[np.ndarray] = []
        for row, query_row in enumerate(request.query_rows.tolist()):
            pool = self.pool.get(query_row, empty)
            allowed = pool[~np.isin(pool, request.excluded[row])]
            if allowed.shape[0] >= request.n:
                chosen = rng.choice(allowed, size=request.n, replace=False)
            else:
                chosen = rng.permutation(allowed)
                short.setdefault(request.n - allowed.shape[0], []).append(row)
            items[row, : chosen.shape[0]] = chosen
            taken.append(chosen)
        for need, rows in sorted(short.items()):
            logger.debug("%d row(s) need %d fallback negative(s)", len(rows), need)
            try:
                fill = self.fallback.sample(
                    query_rows=request.query_rows[rows],
                    positive_rows=request.positive_rows[rows],
                    n=need,
                    rng=rng,
                    exclude=[
                        np.concatenate([request.excluded[row], taken[row]]).tolist() for row in rows
                    ],
                )
            except SamplingError as error:
                raise SamplingError(
                    f"the fallback could not top up the short pools of batch rows {rows[:10]} "
                    f"(its row numbers count within those rows): {error}"
                ) from error
            items[rows, request.n - need :] = fill.items
        return NegativeSample(items=items, log_q=np.zeros(items.shape, dtype=np.float64))
