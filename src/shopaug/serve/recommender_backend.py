"""The served next-basket recommender of a recommendation run (``task: recommend``).

``shopaug run retail-quick --out RUN`` writes ``RUN/model/``: the two-tower row chosen on
validation recall (:class:`~shopaug.models.two_tower.TwoTowerRecommender`, safetensors), the
item titles and each customer's purchases before the run's cut
(:func:`~shopaug.models.two_tower.save_serving_data`). ``shopaug serve RUN`` loads it through
the same :class:`~shopaug.serve.catalog_backend.CatalogLoader` as a search run (which hands
such a directory here) and answers:

* ``POST /recommend {"customer_id": ...}``: the customer's stored history
  (:meth:`RecommenderBackend.customer_history`), then their purchases and carts logged through
  ``/feedback`` since (read from the feedback store by the route,
  :func:`shopaug.serve.routes.recommend.customer_history`), ranked by the user tower against
  the item tower; with nothing logged, exactly as the run's test split ranked it. 404 for a
  customer with neither. The weights stay as trained until the next retrain;
* ``POST /recommend {"history": [...]}``: an ad-hoc history of item ids, the same way (ids the
  model does not know: 422 naming them);
* ``session_id``: the products the session clicked, carted or bought, the same way.

The catalog is the model's: every item sold before the cut plus the new items of the run,
which have no purchase and only their title's text vector through the item tower, so they
stay reachable. Rankings are not filtered: in retail most of a next basket is repeat
purchases, and the run measured the unfiltered ranking. ``/search`` answers 404: the item
tower's text vectors come from an encoder the model directory does not hold.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from shopaug.models.recommenders import repeat_order
from shopaug.retrieval.ranking import CatalogRanker
from shopaug.serve.backend import (
    Hit,
    SearchNotSupportedError,
    UnknownCustomerError,
    UnknownProductError,
)

if TYPE_CHECKING:
    from shopaug.models.two_tower import TwoTowerRecommender

logger = logging.getLogger(__name__)


def is_recommender_dir(model_dir: Path) -> bool:
    """True when ``model_dir`` holds a two-tower recommender (its ``shopaug-model.json`` kind)."""
    import json

    from shopaug.models.two_tower import DESCRIPTOR, KIND

    path = Path(model_dir) / DESCRIPTOR
    if not path.is_file():
        return False
    try:
        payload = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return False  # the search loader reports the malformed descriptor
    return isinstance(payload, dict) and payload.get("kind") == KIND


class RecommenderBackend:
    """A trained two-tower recommender as a :class:`~shopaug.serve.backend.SearchBackend`.

    Immutable after construction; the model is only read (``user_matrix`` in eval mode, no
    gradients), so any number of request threads may use it.

    Args:
        version: ``two-tower-recommender@<sha256 prefix of the weights>``.
        model: The recommender (its catalog, item tower and user tower).
        titles: Item id -> title.
        histories: Customer id -> purchases (item ids, oldest first) before ``cut``.
        cut: The date the histories end.
        repeat_first: The history's own items first (most often bought, then most recent),
            then the model's ranking of the rest; scores stay the model's.
    """

    def __init__(
        self,
        version: str,
        model: TwoTowerRecommender,
        *,
        titles: Mapping[str, str],
        histories: Mapping[str, Sequence[str]],
        cut: str,
        repeat_first: bool = False,
    ) -> None:
        model.eval()
        self.repeat_first = repeat_first
        self.version = version
        self._model = model
        self._items = tuple(model.item_ids)
        self._item_vectors = model.item_matrix()  # (n_items, dim)
        self._ranker = CatalogRanker(self._item_vectors, list(self._items))
        self._titles = dict(titles)
        self._histories = {customer: tuple(items) for customer, items in histories.items()}
        self.cut = cut

    @property
    def ranking(self) -> str:
        ranking = "two-tower next-basket recommender (user tower . item tower)"
        if self.repeat_first:
            ranking = "the customer's own past items first (count, then recency), then " + ranking
        return ranking

    @property
    def size(self) -> int:
        """Number of items."""
        return len(self._items)

    @property
    def customers(self) -> int:
        """Number of customers with a stored history."""
        return len(self._histories)

    def has_product(self, product_id: str) -> bool:
        return product_id in self._model.rows

    def search(self, query: str, k: int, filters: Mapping[str, str] | None) -> list[Hit]:
        """Always :class:`SearchNotSupportedError` (see the module docstring)."""
        raise SearchNotSupportedError(
            f"the model in service ({self.version}) is a next-basket recommender: it ranks "
            "customers' histories (POST /recommend), not queries; serve a search run for /search"
        )

    def customer_history(self, customer_id: str) -> list[str]:
        """The stored purchases of ``customer_id`` (before the cut), oldest first; the
        service appends those logged since (see the module docstring).

        Raises:
            UnknownCustomerError: no purchase of this customer before the cut is stored.
        """
        history = self._histories.get(customer_id)
        if history is None:
            raise UnknownCustomerError(
                customer_id,
                f"customer {customer_id!r} is unknown to the model in service: it holds the "
                f"histories of {len(self._histories)} customers with a purchase before "
                f"{self.cut}; send 'history' (item ids) instead",
            )
        return list(history)

    def recommend(self, history: Sequence[str], k: int) -> list[Hit]:
        """The top ``k`` items for ``history`` by the user tower against the item tower.

        Raises:
            UnknownProductError: ids of ``history`` that are not in the model's catalog.
        """
        index = self._model.rows
        unknown = [item for item in dict.fromkeys(history) if item not in index]
        if unknown:
            raise UnknownProductError(unknown)
        user = self._model.user_matrix([[index[item] for item in history]])  # (1, dim)
        own = repeat_order(history) if self.repeat_first else []
        rows, scores = self._ranker.search(user, min(k + len(own), self.size))
        found = [(self._items[int(r)], float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]
        if own:
            own_scores = self._item_vectors[[index[i] for i in own]] @ user[0]  # (len(own),)
            first = set(own)
            found = [
                *zip(own, own_scores.tolist()),
                *((item, score) for item, score in found if item not in first),
            ]
        return [Hit(item, score, self._titles.get(item, "")) for item, score in found[:k]]


def load_recommender_backend(model_dir: Path) -> RecommenderBackend:
    """Load ``model_dir`` (a recommendation run's ``model/``) as a backend.

    Raises:
        FileNotFoundError: the weights, titles or histories are missing (named).
        ValueError: a file is malformed, or a history names an item outside the model's catalog.
    """
    from shopaug.models.fingerprint import WeightsFingerprint
    from shopaug.models.two_tower import KIND, TwoTowerRecommender, load_serving_data

    model = TwoTowerRecommender.load(model_dir)
    data = load_serving_data(model_dir)
    for customer, items in data.histories.items():
        unknown = [item for item in items if item not in model.rows]
        if unknown:
            raise ValueError(
                f"{model_dir}: customer {customer!r} has items {unknown[:3]} outside the model's "
                "catalog"
            )
    version = f"{KIND}@{WeightsFingerprint(model)()}"
    logger.info(
        "recommender %s: %d items, %d customers (histories before %s)",
        version,
        len(model.item_ids),
        len(data.histories),
        data.cut,
    )
    return RecommenderBackend(
        version,
        model,
        titles=data.titles,
        histories=data.histories,
        cut=data.cut,
        repeat_first=data.repeat_first,
    )
