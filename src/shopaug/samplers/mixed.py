"""Mixed negative sampling: in-batch negatives plus negatives drawn from the whole catalog."""

from __future__ import annotations

import logging

import numpy as np

from shopaug.errors import ConfigError
from shopaug.samplers.base import (
    Exclusions,
    NegativeSample,
    SamplingError,
    check_int,
    check_request,
)
from shopaug.samplers.in_batch import InBatchSampler
from shopaug.samplers.popularity import PopularitySampler
from shopaug.samplers.uniform import UniformSampler

logger = logging.getLogger(__name__)


class MixedSampler:
    """``n - n_uniform`` in-batch negatives plus ``n_uniform`` catalog negatives per row.

    In-batch negatives only ever contain items that are somebody's positive, so cold and
    long-tail items are never negatives and the model never learns to rank them down. Yang et
    al. (2020) add a few negatives drawn uniformly from the whole catalog ("index") to every
    batch. ``uniform`` may also be a :class:`PopularitySampler`.

    ``log_q`` is the log of the mixture both parts come from, the same for an item whichever
    part drew it, with ``n_in = n - n_uniform``::

        q(j) = (n_in * q_in_batch(j) + n_uniform * q_catalog(j)) / n

    and a loss subtracts it from the logits as for :class:`InBatchSampler`. When the in-batch
    sampler has no counts there is no correction and ``log_q`` is 0.

    References:
        Yang et al. 2020, "Mixed Negative Sampling for Learning Two-tower Neural Networks in
        Recommendations", WWW Companion. https://doi.org/10.1145/3366424.3386195

    Args:
        in_batch: the in-batch sampler (its counts give ``q_in_batch``).
        uniform: the catalog sampler for the extra negatives.
        n_uniform: catalog negatives per row, >= 0; the rest of ``n`` are in-batch.

    Shapes:
        ``positive_rows`` ``(batch,)`` -> ``items``, ``log_q`` ``(batch, n)``; columns
        ``[:n - n_uniform]`` are in-batch, the last ``n_uniform`` from the catalog.

    Example:
        >>> import numpy as np
        >>> from shopaug.samplers import InBatchSampler, MixedSampler, UniformSampler
        >>> counts = np.ones(50)
        >>> sampler = MixedSampler(InBatchSampler(50, counts=counts), UniformSampler(50), 2)
        >>> out = sampler.sample(query_rows=np.arange(4), positive_rows=np.array([1, 2, 3, 4]),
        ...                      n=5, rng=np.random.default_rng(0))
        >>> out.items.shape
        (4, 5)
    """

    def __init__(
        self,
        in_batch: InBatchSampler,
        uniform: UniformSampler | PopularitySampler,
        n_uniform: int,
    ) -> None:
        if in_batch.n_items != uniform.n_items:
            raise ConfigError(
                f"in_batch and uniform samplers disagree on n_items: "
                f"{in_batch.n_items} vs {uniform.n_items}"
            )
        self.n_uniform = check_int(n_uniform, name="n_uniform", minimum=0)
        self.in_batch = in_batch
        self.uniform = uniform
        if in_batch.probabilities is None:
            logger.info("MixedSampler: in-batch sampler has no counts, so log_q is 0")

    @property
    def n_items(self) -> int:
        return self.in_batch.n_items

    def log_q_of(self, item_rows: np.ndarray, *, n: int) -> np.ndarray:
        """float64 log of the mixture probability of the given items for ``n`` negatives a row."""
        rows = np.asarray(item_rows, dtype=np.int64)
        in_batch_probabilities = self.in_batch.probabilities
        if in_batch_probabilities is None:
            return np.zeros(rows.shape, dtype=np.float64)
        n_in = n - self.n_uniform
        mixture = (n_in * in_batch_probabilities + self.n_uniform * self.uniform.probabilities) / n
        with np.errstate(divide="ignore"):
            return np.log(mixture[rows])

    def sample(
        self,
        *,
        query_rows: np.ndarray,
        positive_rows: np.ndarray,
        n: int,
        rng: np.random.Generator,
        exclude: Exclusions | None = None,
    ) -> NegativeSample:
        """Draw in-batch then catalog negatives; see :class:`NegativeSampler`."""
        request = check_request(
            query_rows=query_rows,
            positive_rows=positive_rows,
            n=n,
            exclude=exclude,
            n_items=self.n_items,
        )
        if self.n_uniform > request.n:
            raise SamplingError(
                f"n={request.n} negatives per row is fewer than n_uniform={self.n_uniform}"
            )
        parts = []
        if request.n > self.n_uniform:
            in_batch = self.in_batch.sample(
                query_rows=request.query_rows,
                positive_rows=request.positive_rows,
                n=request.n - self.n_uniform,
                rng=rng,
                exclude=exclude,
            )
            parts.append(in_batch.items)
        if self.n_uniform:
            catalog = self.uniform.sample(
                query_rows=request.query_rows,
                positive_rows=request.positive_rows,
                n=self.n_uniform,
                rng=rng,
                exclude=exclude,
            )
            parts.append(catalog.items)
        items = np.concatenate(parts, axis=1)
        return NegativeSample(items=items, log_q=self.log_q_of(items, n=request.n))
