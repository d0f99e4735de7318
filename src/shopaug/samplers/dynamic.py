"""Dynamic (adversarial, IRGAN-style) negatives drawn from the current model's scores."""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import numpy as np

from shopaug.errors import ConfigError
from shopaug.samplers.base import (
    Exclusions,
    NegativeSample,
    SamplingError,
    check_int,
    check_n_items,
    check_request,
)
from shopaug.samplers.draws import Categorical, check_enough_items, gumbel_top_k

logger = logging.getLogger(__name__)


@runtime_checkable
class Scorer(Protocol):
    """Scores items for queries; how the training loop lends its current model to a sampler.

    ``score(query_rows, None)`` scores every catalog item and returns ``(batch, n_items)``;
    ``score(query_rows, item_rows)`` scores only the given ``(m,)`` items and returns
    ``(batch, m)``, columns in the order of ``item_rows``. Higher means more relevant.
    """

    def score(self, query_rows: np.ndarray, item_rows: np.ndarray | None) -> np.ndarray: ...


class DynamicSampler:
    """Negatives drawn with ``q(j | query) = softmax(score(query, j) / temperature)``.

    The "generator" distribution of IRGAN (Wang et al. 2017): items the current model scores
    high for a query, but that are not its positives, are the most informative negatives, and
    as the model improves they change, so scores are refreshed from the model as training goes.
    ``temperature`` sets how hard: as it goes to 0 every draw is the top-scored allowed item;
    as it grows the distribution approaches uniform.

    Scores are cached per query row and dropped every ``refresh_every`` calls to :meth:`sample`
    (at steps 0, N, 2N, ...; ``step`` counts the calls) or when :meth:`refresh` is called, so
    the scorer is called only for query rows not seen since the last refresh. With
    ``candidates`` set, a uniform subset of that many items is drawn at each refresh and only
    it is scored (much cheaper than the catalog; the cache then holds ``candidates`` floats per
    query instead of ``n_items``).

    ``log_q`` is the log of the proposal probability of each drawn item before the query's
    positives are excluded: the log-softmax over the catalog, or with candidates the estimate
    ``log(candidates / n_items) + log_softmax_within_candidates``.

    References:
        Wang et al. 2017, "IRGAN: A Minimax Game for Unifying Generative and Discriminative
        Information Retrieval Models", SIGIR. https://doi.org/10.1145/3077136.3080786

    Args:
        scorer: gives the scores (e.g. the model being trained, through a small adapter).
        n_items: catalog size.
        temperature: softmax temperature, > 0.
        refresh_every: calls to :meth:`sample` between score refreshes, >= 1.
        candidates: score a uniform subset of this many items (``2 <= candidates <= n_items``)
            instead of the whole catalog; ``None`` scores everything.
        replace: draw with replacement (default) or ``n`` distinct negatives per row.

    Shapes:
        ``query_rows``, ``positive_rows`` ``(batch,)`` -> ``items``, ``log_q`` ``(batch, n)``.

    Example:
        >>> import numpy as np
        >>> from shopaug.samplers import DynamicSampler
        >>> class Nearest:  # a query row prefers items with nearby row numbers
        ...     def score(self, query_rows, item_rows):
        ...         items = np.arange(30) if item_rows is None else item_rows
        ...         return -np.abs(query_rows[:, None] - items[None, :]).astype(float)
        >>> sampler = DynamicSampler(Nearest(), 30, temperature=0.01, refresh_every=10)
        >>> out = sampler.sample(query_rows=np.array([5]), positive_rows=np.array([5]), n=2,
        ...                      rng=np.random.default_rng(0), exclude=[{4}])
        >>> out.items.tolist()
        [[6, 6]]
    """

    def __init__(
        self,
        scorer: Scorer,
        n_items: int,
        *,
        temperature: float = 1.0,
        refresh_every: int = 100,
        candidates: int | None = None,
        replace: bool = True,
    ) -> None:
        self._n_items = check_n_items(n_items)
        if not np.isfinite(temperature) or temperature <= 0:
            raise ConfigError(f"temperature must be a finite number > 0, got {temperature!r}")
        check_int(refresh_every, name="refresh_every", minimum=1)
        if candidates is not None:
            check_int(candidates, name="candidates", minimum=2)
            if candidates > self._n_items:
                raise ConfigError(
                    f"candidates must be None or at most n_items={self._n_items}, got {candidates}"
                )
        self.scorer = scorer
        self.temperature = float(temperature)
        self.refresh_every = refresh_every
        self.candidates = candidates
        self.replace = replace
        self.step = 0
        self._cache: dict[int, np.ndarray] = {}
        self._candidate_rows: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        return self._n_items

    def refresh(self) -> None:
        """Drop cached scores (and the candidate subset): the next :meth:`sample` rescores."""
        logger.debug("DynamicSampler refresh at step %d", self.step)
        self._cache.clear()
        self._candidate_rows = None

    def _item_rows(self, rng: np.random.Generator) -> np.ndarray:
        if self.candidates is None:
            return np.arange(self._n_items, dtype=np.int64)
        if self._candidate_rows is None:
            drawn = rng.choice(self._n_items, size=self.candidates, replace=False)
            self._candidate_rows = np.sort(drawn).astype(np.int64)
        return self._candidate_rows

    def _scores(self, query_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """``(batch, m)`` float64 scores, calling the scorer once for the uncached query rows."""
        missing = np.unique(query_rows[[row not in self._cache for row in query_rows.tolist()]])
        if missing.size:
            scored = np.asarray(
                self.scorer.score(missing, None if self.candidates is None else item_rows),
                dtype=np.float64,
            )
            expected = (missing.shape[0], item_rows.shape[0])
            if scored.shape != expected:
                raise SamplingError(
                    f"scorer {type(self.scorer).__name__}.score returned shape {scored.shape}, "
                    f"expected (query rows, items) = {expected}"
                )
            if not np.isfinite(scored).all():
                raise SamplingError(
                    f"scorer {type(self.scorer).__name__}.score returned non-finite scores"
                )
            for query_row, row_scores in zip(missing.tolist(), scored, strict=True):
                self._cache[query_row] = row_scores
        return np.stack([self._cache[row] for row in query_rows.tolist()])

    def sample(
        self,
        *,
        query_rows: np.ndarray,
        positive_rows: np.ndarray,
        n: int,
        rng: np.random.Generator,
        exclude: Exclusions | None = None,
    ) -> NegativeSample:
        """Draw ``n`` negatives per row from the score softmax; see :class:`NegativeSampler`."""
        request = check_request(
            query_rows=query_rows,
            positive_rows=positive_rows,
            n=n,
            exclude=exclude,
            n_items=self._n_items,
        )
        if self.step % self.refresh_every == 0:
            self.refresh()
        self.step += 1
        item_rows = self._item_rows(rng)  # (m,)
        logits = self._scores(request.query_rows, item_rows) / self.temperature  # (batch, m)
        if not np.isfinite(logits).all():
            raise SamplingError(
                f"scores / temperature overflow at temperature={self.temperature}; raise it"
            )
        blocked = request.hits_excluded(
            np.broadcast_to(item_rows, (request.batch_size, item_rows.shape[0]))
        )  # (batch, m)
        what = "catalog items" if self.candidates is None else "candidate items"
        check_enough_items(request, (~blocked).sum(axis=1), replace=self.replace, what=what)

        top = logits.max(axis=1, keepdims=True)
        log_q = logits - (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))
        if self.candidates is not None:
            log_q += np.log(self.candidates / self._n_items)
        masked = np.where(blocked, -np.inf, logits)  # (batch, m)
        masked -= masked.max(axis=1, keepdims=True)
        columns = np.empty((request.batch_size, request.n), dtype=np.int64)
        for row in range(request.batch_size):
            if self.replace:
                columns[row] = Categorical(np.exp(masked[row])).draw(request.n, rng)
            else:
                columns[row] = gumbel_top_k(masked[row], request.n, rng)
        items = item_rows[columns]
        return NegativeSample(items=items, log_q=np.take_along_axis(log_q, columns, axis=1))
