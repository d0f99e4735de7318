"""The :class:`NegativeSampler` protocol, its result :class:`NegativeSample`, and request checks.

Every sampler works over item *rows* (integers ``0 .. n_items - 1``), never over product ids, and
takes an explicit :class:`numpy.random.Generator`: the same seed gives the same negatives on any
machine. All samplers share one keyword-only signature::

    sampler.sample(query_rows=..., positive_rows=..., n=..., rng=..., exclude=None)

so a training loop can swap one for another without knowing which it holds.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol, runtime_checkable

import numpy as np

from shopaug.errors import ConfigError, ShopaugError

#: Per query row, the item rows that must never come back as its negatives (its known positives).
Exclusions = Sequence[Collection[int]]


class SamplingError(ShopaugError, ValueError):
    """A sampling request that cannot be met: bad arguments (shapes, rows out of range) or too few
    items left once a row's positives are excluded. The message names the argument or the row."""


@dataclass(frozen=True)
class NegativeSample:
    """The negatives drawn for one batch.

    Attributes:
        items: ``(batch, n)`` int64 item rows; row ``i`` holds the negatives of query row ``i``.
        log_q: ``(batch, n)`` float64 log of the probability with which the sampler's proposal
            distribution draws each item (before the row's positives are excluded). A loss uses it
            for the logQ correction: ``logits = scores - log_q``. It is 0 where no proposal
            distribution exists (hard pools, in-batch without counts), which leaves logits as
            they are.
    """

    items: np.ndarray
    log_q: np.ndarray

    def __post_init__(self) -> None:
        if self.items.ndim != 2 or self.items.dtype != np.int64:
            raise SamplingError(
                f"NegativeSample.items must be a 2-D int64 array, "
                f"got shape {self.items.shape} dtype {self.items.dtype}"
            )
        if self.log_q.shape != self.items.shape or self.log_q.dtype != np.float64:
            raise SamplingError(
                f"NegativeSample.log_q must be float64 with the shape of items {self.items.shape}, "
                f"got shape {self.log_q.shape} dtype {self.log_q.dtype}"
            )


@runtime_checkable
class NegativeSampler(Protocol):
    """Draws ``n`` negative item rows for every query of a batch.

    A sampler never returns a row's own positive nor any item in ``exclude[i]``; when too few
    items are left to do that it raises :class:`SamplingError` naming the row.
    """

    @property
    def n_items(self) -> int:
        """Size of the catalog: items are rows ``0 .. n_items - 1``."""
        ...

    def sample(
        self,
        *,
        query_rows: np.ndarray,
        positive_rows: np.ndarray,
        n: int,
        rng: np.random.Generator,
        exclude: Exclusions | None = None,
    ) -> NegativeSample:
        """Draw negatives.

        Args:
            query_rows: ``(batch,)`` int query rows (only samplers that condition on the query,
                such as hard pools and dynamic samplers, look at them).
            positive_rows: ``(batch,)`` int item rows, the positive of each query.
            n: negatives per query, at least 1.
            rng: the generator every random draw comes from.
            exclude: optional, one collection of item rows per query (its known positives);
                the query's own positive is always excluded as well.

        Returns:
            A :class:`NegativeSample` with ``(batch, n)`` items and log_q.
        """
        ...


@dataclass(frozen=True)
class SampleRequest:
    """A checked :meth:`NegativeSampler.sample` call.

    Attributes:
        query_rows: ``(batch,)`` int64.
        positive_rows: ``(batch,)`` int64, each in ``[0, n_items)``.
        n: negatives per query.
        excluded: per query row, its positive plus ``exclude[i]``, as sorted unique int64 arrays.
        n_items: catalog size the rows were checked against.
    """

    query_rows: np.ndarray
    positive_rows: np.ndarray
    n: int
    excluded: tuple[np.ndarray, ...]
    n_items: int

    @property
    def batch_size(self) -> int:
        return int(self.positive_rows.shape[0])

    @cached_property
    def excluded_keys(self) -> np.ndarray:
        """Sorted codes ``row * n_items + item`` of every excluded (row, item) pair."""
        keys = [row * self.n_items + items for row, items in enumerate(self.excluded)]
        return np.sort(np.concatenate(keys)) if keys else np.empty(0, dtype=np.int64)

    def hits_excluded(self, items: np.ndarray) -> np.ndarray:
        """``(batch, k)`` bool: which of the ``(batch, k)`` items are excluded for their row."""
        rows = np.arange(self.batch_size, dtype=np.int64)[:, None]
        return np.isin(rows * self.n_items + items, self.excluded_keys)


def _as_rows(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise SamplingError(f"{name} must be a 1-D array of rows, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise SamplingError(f"{name} must hold integer rows, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def check_request(
    *,
    query_rows: np.ndarray,
    positive_rows: np.ndarray,
    n: int,
    exclude: Exclusions | None,
    n_items: int,
) -> SampleRequest:
    """Validate the arguments of :meth:`NegativeSampler.sample` and gather each row's exclusions.

    Raises:
        SamplingError: naming the argument (and row) that is wrong.
    """
    queries = _as_rows(query_rows, "query_rows")
    positives = _as_rows(positive_rows, "positive_rows")
    if queries.shape != positives.shape:
        raise SamplingError(
            f"query_rows and positive_rows must have the same length, "
            f"got {queries.shape[0]} and {positives.shape[0]}"
        )
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise SamplingError(f"n (negatives per query) must be a positive integer, got {n!r}")
    bad = np.flatnonzero((positives < 0) | (positives >= n_items))
    if bad.size:
        row = int(bad[0])
        raise SamplingError(
            f"positive_rows[{row}] = {positives[row]} is outside the catalog [0, {n_items})"
        )
    if exclude is not None and len(exclude) != positives.shape[0]:
        raise SamplingError(
            f"exclude must hold one collection per query row ({positives.shape[0]}), "
            f"got {len(exclude)}"
        )
    excluded = []
    for row, positive in enumerate(positives.tolist()):
        extra = [] if exclude is None else list(exclude[row])
        items = np.unique(np.asarray([positive, *extra], dtype=np.int64))
        if items[0] < 0 or items[-1] >= n_items:
            raise SamplingError(
                f"exclude[{row}] holds item rows outside the catalog [0, {n_items}): "
                f"{items[(items < 0) | (items >= n_items)].tolist()}"
            )
        excluded.append(items)
    return SampleRequest(
        query_rows=queries,
        positive_rows=positives,
        n=int(n),
        excluded=tuple(excluded),
        n_items=n_items,
    )


def check_int(value: object, *, name: str, minimum: int) -> int:
    """Return ``value`` as an int, or raise :class:`ConfigError` unless it is an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_n_items(n_items: int) -> int:
    """Return ``n_items`` as an int, or raise :class:`ConfigError` unless it is at least 2."""
    return check_int(n_items, name="n_items (catalog size)", minimum=2)
