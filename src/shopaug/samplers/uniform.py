"""Uniform negatives over the whole catalog."""

from __future__ import annotations

import numpy as np

from shopaug.samplers.base import Exclusions, NegativeSample, check_n_items, check_request
from shopaug.samplers.draws import DEFAULT_MAX_RETRIES, draw_from_catalog


class UniformSampler:
    """Every catalog item is equally likely: ``q(j) = 1 / n_items``.

    The baseline every other sampler is compared with. Uniform negatives are mostly easy (a
    random product is rarely confusable with the query's), cheap, and unbiased by popularity.

    Args:
        n_items: catalog size; items are rows ``0 .. n_items - 1``.
        replace: draw with replacement (default; a row may repeat a negative) or without
            (``n`` distinct negatives per row, which needs ``n`` allowed items).
        max_retries: rounds of redrawing excluded items before drawing those rows exactly.

    Shapes:
        ``positive_rows`` ``(batch,)`` -> ``items``, ``log_q`` ``(batch, n)``;
        ``log_q = -log(n_items)`` everywhere.

    Example:
        >>> import numpy as np
        >>> from shopaug.samplers import UniformSampler
        >>> sampler = UniformSampler(n_items=100)
        >>> rows = np.array([3, 7])
        >>> out = sampler.sample(query_rows=rows, positive_rows=rows, n=5,
        ...                      rng=np.random.default_rng(0))
        >>> out.items.shape
        (2, 5)
    """

    def __init__(
        self, n_items: int, *, replace: bool = True, max_retries: int = DEFAULT_MAX_RETRIES
    ) -> None:
        self._n_items = check_n_items(n_items)
        self.replace = replace
        self.max_retries = max_retries

    @property
    def n_items(self) -> int:
        return self._n_items

    @property
    def probabilities(self) -> np.ndarray:
        """``(n_items,)`` float64 proposal probabilities, all ``1 / n_items``."""
        return np.full(self._n_items, 1.0 / self._n_items)

    def sample(
        self,
        *,
        query_rows: np.ndarray,
        positive_rows: np.ndarray,
        n: int,
        rng: np.random.Generator,
        exclude: Exclusions | None = None,
    ) -> NegativeSample:
        """Draw ``n`` uniform negatives per row; see :class:`NegativeSampler`."""
        request = check_request(
            query_rows=query_rows,
            positive_rows=positive_rows,
            n=n,
            exclude=exclude,
            n_items=self._n_items,
        )
        items = draw_from_catalog(
            request, rng, categorical=None, replace=self.replace, max_retries=self.max_retries
        )
        log_q = np.full(items.shape, -np.log(self._n_items), dtype=np.float64)
        return NegativeSample(items=items, log_q=log_q)
