"""In-batch negatives: the other queries' positives, with the logQ popularity correction."""

from __future__ import annotations

import numpy as np

from shopaug.errors import ConfigError
from shopaug.samplers.base import Exclusions, NegativeSample, check_n_items, check_request
from shopaug.samplers.draws import check_enough_items
from shopaug.samplers.popularity import check_counts


class InBatchSampler:
    """Negatives are the positives of the other queries in the batch.

    In-batch negatives cost nothing to encode (the batch already holds them), but they are
    drawn with the popularity of the training stream: an item that is a positive often is a
    negative often, so a softmax over in-batch candidates learns to push popular items down too
    much. Yi et al. (2019) correct that by subtracting the log of each item's sampling
    probability from its logit; ``log_q`` here is that log probability, estimated from item
    counts as ``q(j) = (count_j + smoothing) / sum(count + smoothing)``.

    How a loss applies the correction (sampled softmax / InfoNCE)::

        logits_pos = score(q, pos) - log_q_of(pos)              # (batch,)
        logits_neg = score(q, out.items) - out.log_q            # (batch, n)
        loss = cross_entropy([logits_pos, logits_neg], target=0)

    Subtract ``log_q`` only during training; serving ranks by the raw scores.

    The negatives of a row are drawn without replacement, uniformly among the distinct batch
    positives that are not excluded for it (its own positive, duplicates of it in the batch, and
    ``exclude[i]``). ``n`` must therefore not exceed that number; with all distinct positives and
    nothing else excluded, ``n = batch - 1`` takes every other positive.

    References:
        Yi et al. 2019, "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
        Recommendations", RecSys. https://doi.org/10.1145/3298689.3346996

    Args:
        n_items: catalog size.
        counts: optional ``(n_items,)`` item counts (how often each item is a training
            positive). Without them ``log_q`` is 0 and no correction happens.
        smoothing: added to every count, >= 0 (keeps ``log_q`` finite for unseen items).

    Shapes:
        ``positive_rows`` ``(batch,)`` -> ``items``, ``log_q`` ``(batch, n)``, ``n <= batch - 1``.

    Example:
        >>> import numpy as np
        >>> from shopaug.samplers import InBatchSampler
        >>> sampler = InBatchSampler(4, counts=np.array([5, 1, 1, 1]))
        >>> out = sampler.sample(query_rows=np.arange(3), positive_rows=np.array([0, 1, 2]),
        ...                      n=2, rng=np.random.default_rng(0))
        >>> sorted(out.items[0].tolist())
        [1, 2]
    """

    def __init__(
        self, n_items: int, *, counts: np.ndarray | None = None, smoothing: float = 1.0
    ) -> None:
        self._n_items = check_n_items(n_items)
        self._log_probabilities: np.ndarray | None = None
        if counts is not None:
            if not np.isfinite(smoothing) or smoothing < 0:
                raise ConfigError(f"smoothing must be a finite number >= 0, got {smoothing!r}")
            smoothed = check_counts(counts) + smoothing
            if smoothed.shape[0] != self._n_items:
                raise ConfigError(
                    f"counts has {smoothed.shape[0]} entries but n_items is {self._n_items}"
                )
            if not (smoothed > 0).any():
                raise ConfigError("every item has count + smoothing == 0; use smoothing > 0")
            with np.errstate(divide="ignore"):
                self._log_probabilities = np.log(smoothed / smoothed.sum())

    @property
    def n_items(self) -> int:
        return self._n_items

    @property
    def probabilities(self) -> np.ndarray | None:
        """``(n_items,)`` estimated sampling probabilities, or ``None`` without counts."""
        if self._log_probabilities is None:
            return None
        return np.exp(self._log_probabilities)

    def log_q_of(self, item_rows: np.ndarray) -> np.ndarray:
        """float64 ``log q`` of the given item rows (e.g. the positives), 0 without counts."""
        rows = np.asarray(item_rows, dtype=np.int64)
        if self._log_probabilities is None:
            return np.zeros(rows.shape, dtype=np.float64)
        return self._log_probabilities[rows]

    def sample(
        self,
        *,
        query_rows: np.ndarray,
        positive_rows: np.ndarray,
        n: int,
        rng: np.random.Generator,
        exclude: Exclusions | None = None,
    ) -> NegativeSample:
        """Draw ``n`` in-batch negatives per row; see :class:`NegativeSampler`."""
        request = check_request(
            query_rows=query_rows,
            positive_rows=positive_rows,
            n=n,
            exclude=exclude,
            n_items=self._n_items,
        )
        candidates = np.unique(request.positive_rows)  # (m,)
        blocked = request.hits_excluded(
            np.broadcast_to(candidates, (request.batch_size, candidates.shape[0]))
        )  # (batch, m)
        check_enough_items(
            request, (~blocked).sum(axis=1), replace=False, what="distinct in-batch positives"
        )
        keys = rng.random(blocked.shape)  # (batch, m): a uniform random order per row
        keys[blocked] = -1.0
        order = np.argsort(-keys, axis=1, kind="stable")[:, : request.n]  # (batch, n)
        items = candidates[order]
        return NegativeSample(items=items, log_q=self.log_q_of(items))
