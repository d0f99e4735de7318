"""The narrow interface between the HTTP service and whatever ranks products.

The service never imports an encoder or an index; it calls a :class:`SearchBackend`, which a
:data:`BackendLoader` builds from a model directory. The real loader (an embedding index over
the catalog plus a query-embedding cache) lives with the retrieval code; tests use
:class:`shopaug.serve.testing.FakeBackend`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Hit:
    """One ranked product: its id, the backend's score (higher is better) and its title."""

    product_id: str
    score: float
    title: str = ""


class UnknownProductError(KeyError):
    """Product ids the backend does not know; the service answers 422 naming them."""

    def __init__(self, product_ids: Sequence[str]) -> None:
        self.product_ids = tuple(product_ids)
        super().__init__(f"unknown product ids: {', '.join(map(repr, self.product_ids))}")

    def __str__(self) -> str:
        return str(self.args[0])


class UnsupportedFilterError(ValueError):
    """A filter field the backend cannot apply; the service answers 422 naming it."""


class UnknownCustomerError(LookupError):
    """A customer id the served model has no history for; the service answers 404."""

    def __init__(self, customer_id: str, detail: str) -> None:
        self.customer_id = customer_id
        super().__init__(detail)

    def __str__(self) -> str:
        return str(self.args[0])


class SearchNotSupportedError(LookupError):
    """The model in service ranks no queries (a next-basket recommender); the service answers
    404 with this message."""


@runtime_checkable
class SearchBackend(Protocol):
    """What the service needs from a model.

    Implementations must be safe to call from several threads at once (the service runs
    handlers in a thread pool) and must not change after loading: a new model is a new backend.
    """

    #: Model version shown in responses and in the ``shopaug_model_info`` metric.
    version: str

    @property
    def ranking(self) -> str:
        """How ``search`` ranks, shown by ``GET /model`` (``dense``, ``dense + bm25 (rrf)``)."""
        ...

    def search(self, query: str, k: int, filters: Mapping[str, str] | None) -> list[Hit]:
        """The top ``k`` products for ``query``, best first, honouring ``filters``
        (field -> required value). Raises :class:`UnsupportedFilterError` for unknown fields,
        :class:`SearchNotSupportedError` when the model ranks no queries."""
        ...

    def recommend(self, history: Sequence[str], k: int) -> list[Hit]:
        """``k`` products similar to / following ``history`` (product ids, oldest first).
        A content-based (search) model leaves the history out; a trained next-basket
        recommender ranks as its run evaluated it, repeat purchases included. Products without
        any interaction must be reachable. Raises :class:`UnknownProductError` naming ids that
        are not in the catalog."""
        ...

    def customer_history(self, customer_id: str) -> list[str]:
        """The purchases of ``customer_id`` the model was given when it was trained (product
        ids, oldest first), what ``recommend`` then ranks from. Raises
        :class:`UnknownCustomerError` when the model has none (a search model knows no
        customers)."""
        ...

    def has_product(self, product_id: str) -> bool:
        """True when ``product_id`` is in the catalog."""
        ...


#: Builds a backend from a model directory; raises an exception with a clear message when the
#: directory is not a usable model.
BackendLoader = Callable[[Path], SearchBackend]
