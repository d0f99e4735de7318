"""Baseline next-basket recommenders over item rows: popularity, repeat purchase, co-occurrence,
TIFU-KNN (and personal frequency with time decay, its personal part), and ALS / BPR through the
``implicit`` library.

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
from dataclasses import dataclass, field
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
        basket_items: ``(baskets, items)`` CSR, 1 where a basket holds an item; baskets in the
            order given (time order when built from a split).
        basket_customers: ``(baskets,)`` row in ``customers`` of each basket's customer.
    """

    item_ids: tuple[str, ...]
    customers: tuple[str, ...]
    user_items: sparse.csr_matrix
    basket_items: sparse.csr_matrix
    basket_customers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def from_baskets(
        cls, *, item_ids: Sequence[str], baskets: Iterable[tuple[str, Sequence[str]]]
    ) -> Interactions:
        """Build from ``(customer, items)`` baskets; items outside ``item_ids`` are an error."""
        index = {item: row for row, item in enumerate(item_ids)}
        customer_rows: dict[str, int] = {}
        basket_rows, basket_cols, user_rows = [], [], []
        basket_customers: list[int] = []
        for number, (customer, items) in enumerate(baskets):
            row = customer_rows.setdefault(customer, len(customer_rows))
            basket_customers.append(row)
            for item in set(items):
                if item not in index:
                    raise KeyError(f"basket {number} holds item {item!r} outside the catalog")
                basket_rows.append(number)
                basket_cols.append(index[item])
                user_rows.append(row)
        n_baskets = len(basket_customers)
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
            basket_customers=np.asarray(basket_customers, dtype=np.int64),
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
class TifuKnnConfig:
    """Hyper-parameters of :class:`TifuKnn` (the names of Hu et al. 2020).

    Attributes:
        group_size: ``m``, the number of groups a customer's baskets are cut into.
        within_decay: ``r_b``, decay per basket from the most recent one.
        group_decay: ``r_g``, decay per group from the most recent one.
        neighbours: ``k``, nearest customers whose vectors are averaged.
        alpha: Weight of the customer's own vector (``1 - alpha`` for the neighbours'); at 1 no
            neighbours are searched: personal frequency with time decay.
    """

    group_size: int = 7
    within_decay: float = 0.9
    group_decay: float = 0.7
    neighbours: int = 300
    alpha: float = 0.7

    def __post_init__(self) -> None:
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if not (0.0 < self.within_decay <= 1.0 and 0.0 < self.group_decay <= 1.0):
            raise ValueError("within_decay and group_decay must lie in (0, 1]")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")
        if self.neighbours < 1 and self.alpha < 1.0:
            raise ValueError("neighbours must be >= 1 unless alpha is 1")


def decayed_frequency_config(within_decay: float) -> TifuKnnConfig:
    """Personal item frequency with time decay: TIFU-KNN's own vector with one group and no
    neighbours, ``sum_j r_b ** (n - j) * basket_j / n`` over a customer's ``n`` baskets."""
    return TifuKnnConfig(group_size=1, within_decay=within_decay, group_decay=1.0, alpha=1.0)


def tifu_basket_weights(n_baskets: int, config: TifuKnnConfig) -> np.ndarray:
    """``(n_baskets,)`` weight of each basket (oldest first) in a customer's TIFU vector.

    The reference implementation's recipe (github.com/HaojiHu/TIFUKNN, ``TIFUKNN.py``:
    ``temporal_decay_sum_history`` and ``group_history_list``): basket ``j`` of ``n`` (0-based)
    is decayed by ``r_b ** (n - 1 - j)``, counted from the last basket over the whole history;
    with ``n >= m`` the baskets are cut in order into ``m`` groups, the first ``m - n % m`` of
    ``n // m`` baskets and the rest of one more; a group's vector is the mean of its baskets,
    group ``g`` is decayed by ``r_g ** (m - 1 - g)`` and the customer's vector is the sum over
    groups divided by the number of groups. With ``n < m`` every basket is its own group and the
    group decay still counts from ``m - 1`` (the last basket gets ``r_g ** (m - n)``), as in
    the reference.

    Example:
        >>> tifu_basket_weights(3, TifuKnnConfig(group_size=2, within_decay=0.5,
        ...                     group_decay=0.5)).tolist()
        [0.0625, 0.125, 0.25]
    """
    m = config.group_size
    position = np.arange(n_baskets)
    within = config.within_decay ** (n_baskets - 1 - position).astype(np.float64)
    if n_baskets < m:
        group, sizes, n_groups = position, np.ones(n_baskets), n_baskets
    else:
        base, extra = divmod(n_baskets, m)
        sizes = np.array([base] * (m - extra) + [base + 1] * extra, dtype=np.float64)
        group, n_groups = np.repeat(np.arange(m), sizes.astype(np.int64)), m
    decay = config.group_decay ** (m - 1 - group).astype(np.float64)
    return np.asarray(within * decay / sizes[group] / max(n_groups, 1), dtype=np.float64)


class TifuKnn:
    """TIFU-KNN (Hu et al., "Modeling Personalized Item Frequency Information for Next-basket
    Recommendation", SIGIR 2020): a customer's time-decayed item frequency over groups of
    baskets (:func:`tifu_basket_weights`), blended with the mean vector of the ``k`` nearest
    other customers: ``alpha * own + (1 - alpha) * mean(neighbours)``.

    Neighbours are the customers of ``data`` (every customer with a training basket) nearest by
    Euclidean distance between vectors, the customer itself left out (in the reference the
    evaluated customers are apart from the neighbours). A known customer's vector is built from
    their training baskets; an unknown one's (an ad-hoc history) from their history with each
    entry as one basket. Items the blend scores 0 come after every scored item, by popularity.
    """

    def __init__(self, data: Interactions, config: TifuKnnConfig) -> None:
        self.config = config
        self.rows = {customer: row for row, customer in enumerate(data.customers)}
        self.vectors = customer_vectors(data, config)  # (customers, items) CSR
        self.norms = np.asarray(self.vectors.multiply(self.vectors).sum(axis=1)).ravel()
        self.tiebreak = _popularity_tiebreak(data.item_counts().astype(np.float64)) - 1.0

    def own_vectors(
        self, customers: Sequence[str], histories: Sequence[Sequence[int]]
    ) -> sparse.csr_matrix:
        """``(len(customers), n_items)`` each customer's own TIFU vector."""
        n_items = self.vectors.shape[1]
        rows = []
        for customer, history in zip(customers, histories, strict=True):
            if customer in self.rows:
                rows.append(self.vectors[self.rows[customer]])
                continue
            weights = tifu_basket_weights(len(history), self.config)
            cols = np.asarray(history, dtype=np.int64)
            rows.append(sparse.csr_matrix((weights, (np.zeros_like(cols), cols)), (1, n_items)))
        return sparse.vstack(rows, format="csr") if rows else sparse.csr_matrix((0, n_items))

    def neighbour_means(
        self, customers: Sequence[str], own: sparse.csr_matrix, neighbours: int | None = None
    ) -> sparse.csr_matrix:
        """``(len(customers), n_items)`` mean vector of each customer's ``k`` nearest others
        (``neighbours``, default the config's ``k``)."""
        n_train = self.vectors.shape[0]
        k = min(self.config.neighbours if neighbours is None else neighbours, n_train - 1)
        if k < 1:
            return sparse.csr_matrix(own.shape)
        own_norms = np.asarray(own.multiply(own).sum(axis=1)).ravel()
        dot = np.asarray((own @ self.vectors.T).todense())  # (customers, n_train)
        distance = own_norms[:, None] + self.norms[None, :] - 2.0 * dot
        for row, customer in enumerate(customers):
            if customer in self.rows:
                distance[row, self.rows[customer]] = np.inf
        nearest = np.argpartition(distance, k - 1, axis=1)[:, :k]  # (customers, k)
        pick = sparse.csr_matrix(
            (
                np.full(nearest.size, 1.0 / k),
                (np.repeat(np.arange(len(customers)), k), nearest.ravel()),
            ),
            shape=(len(customers), n_train),
        )
        return (pick @ self.vectors).tocsr()

    def score(self, customers: Sequence[str], histories: Sequence[Sequence[int]]) -> np.ndarray:
        own = self.own_vectors(customers, histories)
        alpha = self.config.alpha
        neighbours = self.neighbour_means(customers, own) if alpha < 1.0 else None
        return self.blend(own, neighbours, alpha)

    def blend(
        self, own: sparse.csr_matrix, neighbours: sparse.csr_matrix | None, alpha: float
    ) -> np.ndarray:
        """``(customers, n_items)`` scores ``alpha * own + (1 - alpha) * neighbours``; items
        scored 0 get negative popularity scores below every scored item."""
        mixed = own * alpha
        if neighbours is not None and alpha < 1.0:
            mixed = mixed + neighbours * (1.0 - alpha)
        scores = np.asarray(mixed.todense(), dtype=np.float64)  # (customers, items)
        unscored = scores <= 0.0
        scores[unscored] = np.broadcast_to(self.tiebreak, scores.shape)[unscored]
        return scores


def customer_vectors(data: Interactions, config: TifuKnnConfig) -> sparse.csr_matrix:
    """``(customers, items)`` TIFU vector of every customer of ``data`` from their baskets in
    order (:func:`tifu_basket_weights`)."""
    owners = data.basket_customers
    order = np.argsort(owners, kind="stable")  # each customer's baskets, in time order
    counts = np.bincount(owners, minlength=len(data.customers))
    weights = np.concatenate(
        [tifu_basket_weights(int(n), config) for n in counts if n > 0] or [np.zeros(0)]
    )
    mixing = sparse.csr_matrix(
        (weights, (owners[order], order)), shape=(len(data.customers), len(owners))
    )
    return (mixing @ data.basket_items).tocsr()


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
    """``(n, k)`` item rows of the ``k`` best scores per row, best first (ties: lower row, also
    where a tie straddles the k-th place, so a shorter list is a prefix of a longer one)."""
    n, k = scores.shape[0], min(k, scores.shape[1])
    if k <= 0:
        return np.zeros((n, 0), dtype=np.int64)
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]  # (n, 1) the k-th best score
    above = scores > kth
    tied = scores == kth
    room = k - above.sum(axis=1, keepdims=True)  # places left for the tie, lowest rows first
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= room))  # exactly k per row
    rows = np.nonzero(chosen)[1].reshape(n, k)  # (n, k) ascending item rows
    order = np.argsort(-np.take_along_axis(scores, rows, axis=1), axis=1, kind="stable")
    return np.take_along_axis(rows, order, axis=1)
