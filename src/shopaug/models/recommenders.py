"""Baseline next-basket recommenders over item rows: popularity, repeat purchase, co-occurrence,
and ALS / BPR through the ``implicit`` library.

Every recommender scores the whole catalog for a batch of customers from their histories (item
rows, oldest first, one entry per basket that held the item) and knows nothing of files or
dates: :class:`Interactions` is built by the caller from the training lines only, so nothing
after the cut reaches a baseline. Items without a training interaction (new items) score
lowest in every baseline here: only a text model can rank them.

Example:
    >>> data = Interactions.from_baskets(
    ...     item_ids=["a", "b", "c"], baskets=[("u1", ["a", "b"]), ("u2", ["a"])])
    >>> RepeatPurchase(data).score(["u2"], [[0]]).argmax(axis=1).tolist()
    [0]
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
from scipy import sparse

from shopaug.errors import require

Item = TypeVar("Item", bound=Hashable)

logger = logging.getLogger(__name__)


class Recommender(Protocol):
    """Scores every catalog item for each customer; higher is better."""

    def score(self, customers: Sequence[str], histories: Sequence[Sequence[int]]) -> np.ndarray:
        """``(len(customers), n_items)`` scores from the customers' histories (item rows)."""
        ...


@dataclass(frozen=True)
class Interactions:
    """Training baskets as sparse matrices over a fixed catalog.

    Attributes:
        item_ids: The catalog; item row ``i`` is ``item_ids[i]``.
        customers: Customer of each row of ``user_items``.
        user_items: ``(customers, items)`` CSR, baskets per (customer, item).
        basket_items: ``(baskets, items)`` CSR, 1 where a basket holds an item.
    """

    item_ids: tuple[str, ...]
    customers: tuple[str, ...]
    user_items: sparse.csr_matrix
    basket_items: sparse.csr_matrix

    @classmethod
    def from_baskets(
        cls, *, item_ids: Sequence[str], baskets: Iterable[tuple[str, Sequence[str]]]
    ) -> Interactions:
        """Build from ``(customer, items)`` baskets; items outside ``item_ids`` are an error."""
        index = {item: row for row, item in enumerate(item_ids)}
        customer_rows: dict[str, int] = {}
        basket_rows, basket_cols, user_rows = [], [], []
        for number, (customer, items) in enumerate(baskets):
            row = customer_rows.setdefault(customer, len(customer_rows))
            for item in set(items):
                if item not in index:
                    raise KeyError(f"basket {number} holds item {item!r} outside the catalog")
                basket_rows.append(number)
                basket_cols.append(index[item])
                user_rows.append(row)
        n_baskets = (max(basket_rows) + 1) if basket_rows else 0
        ones = np.ones(len(basket_cols), dtype=np.float32)
        shape = (n_baskets, len(item_ids))
        basket_items = sparse.csr_matrix((ones, (basket_rows, basket_cols)), shape=shape)
        user_items = sparse.csr_matrix(
            (ones, (user_rows, basket_cols)), shape=(len(customer_rows), len(item_ids))
        )
        user_items.sum_duplicates()
        return cls(
            item_ids=tuple(item_ids),
            customers=tuple(customer_rows),
            user_items=user_items,
            basket_items=basket_items,
        )

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_counts(self) -> np.ndarray:
        """``(n_items,)`` baskets holding each item."""
        return np.asarray(self.basket_items.sum(axis=0)).ravel()


def _popularity_tiebreak(counts: np.ndarray) -> np.ndarray:
    """Counts scaled into [0, 1): added to another score, it only breaks ties."""
    return counts / (counts.max() + 1.0) if counts.size and counts.max() > 0 else counts * 0.0


class Popularity:
    """Most purchased items first, the same list for everyone."""

    def __init__(self, data: Interactions) -> None:
        self.counts = data.item_counts().astype(np.float64)

    def score(self, customers: Sequence[str], histories: Sequence[Sequence[int]]) -> np.ndarray:
        return np.tile(self.counts, (len(customers), 1))


class RepeatPurchase:
    """The customer's own past items first (most often bought, then most recent), then popular
    items: the baseline to beat in retail, where a third of a next basket is repeats."""

    def __init__(self, data: Interactions) -> None:
        self.tiebreak = _popularity_tiebreak(data.item_counts().astype(np.float64))

    def score(self, customers: Sequence[str], histories: Sequence[Sequence[int]]) -> np.ndarray:
        scores = np.tile(self.tiebreak, (len(customers), 1))
        for row, history in enumerate(histories):
            own = repeat_order([int(item) for item in history])
            # above every tiebreak (< 1), in repeat order
            scores[row, own] = 2.0 + np.arange(len(own), 0, -1, dtype=np.float64)
        return scores


def repeat_order(history: Sequence[Item]) -> list[Item]:
    """The distinct items of ``history`` (oldest first), most often bought first, ties by the
    most recent purchase: the order :class:`RepeatPurchase` puts a customer's own items in (and
    the service, for a model chosen as "repeat purchase, then" it)."""
    counts: dict[Item, int] = {}
    last: dict[Item, int] = {}
    for position, item in enumerate(history):
        counts[item] = counts.get(item, 0) + 1
        last[item] = position
    return sorted(counts, key=lambda item: (-counts[item], -last[item]))


class CoOccurrence:
    """Item-item: items bought in the same baskets as the customer's items (cosine of basket
    columns, ``C_ij / sqrt(n_i n_j)``), summed over the history; popularity breaks ties."""

    def __init__(self, data: Interactions) -> None:
        counts = data.item_counts().astype(np.float64)
        together = (data.basket_items.T @ data.basket_items).tocsr().astype(np.float64)
        together.setdiag(0.0)
        together.eliminate_zeros()
        norm = np.sqrt(np.maximum(counts, 1.0))
        scale = sparse.diags(1.0 / norm)
        self.similarity = (scale @ together @ scale).tocsr()
        self.tiebreak = _popularity_tiebreak(counts) * 1e-6

    def score(self, customers: Sequence[str], histories: Sequence[Sequence[int]]) -> np.ndarray:
        n_items = self.similarity.shape[0]
        rows = [r for r, h in enumerate(histories) for _ in h]
        cols = [int(i) for h in histories for i in h]
        profile = sparse.csr_matrix(
            (np.ones(len(cols)), (rows, cols)), shape=(len(histories), n_items)
        )
        return np.asarray((profile @ self.similarity).todense()) + self.tiebreak


@dataclass(frozen=True)
class FactorConfig:
    """Settings of the ``implicit`` models.

    Attributes:
        factors: Latent dimensions.
        iterations: ALS sweeps or BPR epochs.
        regularization: L2 weight.
        learning_rate: BPR only.
        alpha: ALS confidence ``1 + alpha * count``.
        seed: ``random_state`` of the model.
        threads: OpenMP threads (0 = all cores).
    """

    factors: int = 64
    iterations: int = 15
    regularization: float = 0.05
    learning_rate: float = 0.01
    alpha: float = 10.0
    seed: int = 0
    threads: int = 0


class ImplicitFactors:
    """ALS (Hu et al. 2008) or BPR (Rendle et al. 2009) from ``implicit``, on customer x item
    basket counts. Known customers use their learned vector; an unknown one (an ad-hoc history)
    the mean of their items' vectors. Items never bought in training rank last."""

    def __init__(self, data: Interactions, kind: str, config: FactorConfig) -> None:
        implicit = require("implicit", "recommend")
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):  # implicit asks for one BLAS thread
            model = self._build(implicit, kind, config)
            model.fit(data.user_items, show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float64)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float64)
        self.rows = {customer: row for row, customer in enumerate(data.customers)}
        self.cold = data.item_counts() == 0

    @staticmethod
    def _build(implicit: Any, kind: str, config: FactorConfig) -> Any:
        if kind == "als":
            model = implicit.cpu.als.AlternatingLeastSquares(
                factors=config.factors,
                regularization=config.regularization,
                iterations=config.iterations,
                alpha=config.alpha,
                random_state=config.seed,
                num_threads=config.threads,
            )
        elif kind == "bpr":
            model = implicit.cpu.bpr.BayesianPersonalizedRanking(
                factors=config.factors,
                learning_rate=config.learning_rate,
                regularization=config.regularization,
                iterations=config.iterations,
                random_state=config.seed,
                num_threads=config.threads,
            )
        else:
            raise ValueError(f"kind must be 'als' or 'bpr', got {kind!r}")
        return model

    def score(self, customers: Sequence[str], histories: Sequence[Sequence[int]]) -> np.ndarray:
        users = np.zeros((len(customers), self.item_factors.shape[1]))
        for row, (customer, history) in enumerate(zip(customers, histories, strict=True)):
            if customer in self.rows:
                users[row] = self.user_factors[self.rows[customer]]
            elif len(history):
                users[row] = self.item_factors[np.asarray(history)].mean(axis=0)
        scores = users @ self.item_factors.T  # (customers, items)
        scores[:, self.cold] = -np.inf
        return scores


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """``(n, k)`` item rows of the ``k`` best scores per row, best first (ties: lower row)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (n, k)
    order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
    return np.take_along_axis(part, order, axis=1)
