"""Negatives drawn by popularity raised to a power (word2vec's unigram^0.75 distribution)."""

from __future__ import annotations

import numpy as np

from shopaug.errors import ConfigError
from shopaug.samplers.base import Exclusions, NegativeSample, check_request
from shopaug.samplers.draws import DEFAULT_MAX_RETRIES, Categorical, draw_from_catalog


def check_counts(counts: np.ndarray, *, name: str = "counts") -> np.ndarray:
    """Return ``counts`` as a float64 1-D array, or raise :class:`ConfigError` saying why not."""
    array = np.asarray(counts)
    if array.ndim != 1 or array.shape[0] < 2:
        raise ConfigError(
            f"{name} must be a 1-D array with one count per catalog item (>= 2 items), "
            f"got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ConfigError(f"{name} must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(array) | (array < 0))
    if bad.size:
        raise ConfigError(
            f"{name} must be finite and >= 0; {name}[{bad[0]}] = {array[bad[0]]} "
            f"({bad.size} bad value(s))"
        )
    return array


def popularity_weights(counts: np.ndarray, *, alpha: float, smoothing: float) -> np.ndarray:
    """``(count + smoothing) ** alpha`` with checks.

    With ``alpha > 0`` an item with ``count + smoothing == 0`` has weight 0 and is never drawn;
    with ``alpha == 0`` every item has weight 1 (``0 ** 0 == 1``), so the distribution is uniform.

    Raises:
        ConfigError: for a negative or non-finite ``alpha`` or ``smoothing``, or when every
            weight is zero.
    """
    if not np.isfinite(alpha) or alpha < 0:
        raise ConfigError(f"alpha must be a finite number >= 0, got {alpha!r}")
    if not np.isfinite(smoothing) or smoothing < 0:
        raise ConfigError(f"smoothing must be a finite number >= 0, got {smoothing!r}")
    base = check_counts(counts) + smoothing
    with np.errstate(over="ignore"):
        weights = base**alpha
    if not np.isfinite(weights).all():
        raise ConfigError(f"(count + smoothing) ** alpha overflows at alpha={alpha}; lower alpha")
    if not (weights > 0).any():
        raise ConfigError("every item has count + smoothing == 0; use smoothing > 0")
    return weights


class PopularitySampler:
    """Negatives drawn with ``q(j) ∝ (count_j + smoothing) ** alpha``.

    Popular items are the negatives a model most needs to push down, and the ones in-batch
    sampling over-represents. ``alpha`` interpolates: 0 is uniform, 1 is proportional to
    popularity, 0.75 is word2vec's choice (Mikolov et al. 2013, "Distributed Representations of
    Words and Phrases and their Compositionality"). ``smoothing`` (add-one by default) keeps
    items with no interactions reachable; with ``smoothing=0`` they are never drawn.

    Args:
        counts: ``(n_items,)`` non-negative interaction counts per item row; its length is the
            catalog size.
        alpha: exponent, >= 0.
        smoothing: added to every count before the power, >= 0.
        replace: draw with replacement (default) or ``n`` distinct negatives per row.
        max_retries: rounds of redrawing excluded items before drawing those rows exactly.

    Shapes:
        ``positive_rows`` ``(batch,)`` -> ``items``, ``log_q`` ``(batch, n)``;
        ``log_q = log q(item)``.

    Example:
        >>> import numpy as np
        >>> from shopaug.samplers import PopularitySampler
        >>> sampler = PopularitySampler(np.array([10, 0, 3, 1]), alpha=1.0, smoothing=0.0)
        >>> out = sampler.sample(query_rows=np.array([0]), positive_rows=np.array([0]), n=3,
        ...                      rng=np.random.default_rng(0))
        >>> sorted(set(out.items[0].tolist())) <= [2, 3]
        True
    """

    def __init__(
        self,
        counts: np.ndarray,
        alpha: float = 0.75,
        *,
        smoothing: float = 1.0,
        replace: bool = True,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        self.alpha = float(alpha)
        self.smoothing = float(smoothing)
        self.replace = replace
        self.max_retries = max_retries
        self._categorical = Categorical(
            popularity_weights(counts, alpha=self.alpha, smoothing=self.smoothing)
        )
        with np.errstate(divide="ignore"):
            self._log_probabilities = np.log(self._categorical.probabilities)

    @property
    def n_items(self) -> int:
        return int(self._categorical.weights.shape[0])

    @property
    def probabilities(self) -> np.ndarray:
        """``(n_items,)`` float64 proposal probabilities ``q(j)``, summing to 1."""
        return self._categorical.probabilities

    def sample(
        self,
        *,
        query_rows: np.ndarray,
        positive_rows: np.ndarray,
        n: int,
        rng: np.random.Generator,
        exclude: Exclusions | None = None,
    ) -> NegativeSample:
        """Draw ``n`` negatives per row by popularity; see :class:`NegativeSampler`."""
        request = check_request(
            query_rows=query_rows,
            positive_rows=positive_rows,
            n=n,
            exclude=exclude,
            n_items=self.n_items,
        )
        items = draw_from_catalog(
            request,
            rng,
            categorical=self._categorical,
            replace=self.replace,
            max_retries=self.max_retries,
        )
        return NegativeSample(items=items, log_q=self._log_probabilities[items])
