"""A small, deterministic backend for tests and demos of the service (no model, no index).

A fake model directory holds one file, ``fake_model.json``::

    {"version": "v1", "load_seconds": 0.0,
     "products": [{"id": "p1", "title": "blue velvet sofa", "category": "sofas"}, ...]}

Search scores a product by the number of query words in its title (ties: catalog order), so
tests know the answer. Recommendation scores by shared title words with the history products,
so a product that never had an interaction is still recommended.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from shopaug.serve.backend import (
    Hit,
    UnknownCustomerError,
    UnknownProductError,
    UnsupportedFilterError,
)

FAKE_MODEL_FILE = "fake_model.json"
FILTER_FIELDS = ("category",)


class FakeBackend:
    """Word-overlap search over a small catalog; see the module docstring."""

    ranking = "title word overlap"

    def __init__(self, version: str, products: Sequence[Mapping[str, str]]) -> None:
        self.version = version
        self._products = [dict(product) for product in products]
        self._by_id = {product["id"]: product for product in self._products}
        self._words = {
            product["id"]: set(product.get("title", "").lower().split())
            for product in self._products
        }

    def search(self, query: str, k: int, filters: Mapping[str, str] | None) -> list[Hit]:
        for field in filters or {}:
            if field not in FILTER_FIELDS:
                raise UnsupportedFilterError(
                    f"filter field {field!r} is not supported; expected one of {FILTER_FIELDS}"
                )
        words = set(query.lower().split())
        scored = []
        for order, product in enumerate(self._products):
            if any(product.get(f) != v for f, v in (filters or {}).items()):
                continue
            overlap = len(words & self._words[product["id"]])
            scored.append((-overlap, order, product))
        scored.sort(key=lambda item: (item[0], item[1]))
        return [Hit(p["id"], float(-neg), p.get("title", "")) for neg, _, p in scored[:k]]

    def recommend(self, history: Sequence[str], k: int) -> list[Hit]:
        unknown = [pid for pid in history if pid not in self._by_id]
        if unknown:
            raise UnknownProductError(unknown)
        seen = set(history)
        words: set[str] = set()
        for pid in history:
            words |= self._words[pid]
        scored = []
        for order, product in enumerate(self._products):
            if product["id"] in seen:
                continue
            scored.append((-len(words & self._words[product["id"]]), order, product))
        scored.sort(key=lambda item: (item[0], item[1]))
        return [Hit(p["id"], float(-neg), p.get("title", "")) for neg, _, p in scored[:k]]

    def has_product(self, product_id: str) -> bool:
        return product_id in self._by_id

    def customer_history(self, customer_id: str) -> list[str]:
        raise UnknownCustomerError(
            customer_id,
            f"customer {customer_id!r} is unknown: the fake model knows no customers; send "
            "'history' or 'session_id'",
        )


def write_fake_model(
    directory: str | Path,
    version: str,
    products: Sequence[Mapping[str, str]],
    *,
    load_seconds: float = 0.0,
) -> Path:
    """Write a fake model directory that :func:`load_fake_backend` reads; return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"version": version, "load_seconds": load_seconds, "products": list(products)}
    (directory / FAKE_MODEL_FILE).write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return directory


def load_fake_backend(model_dir: Path) -> FakeBackend:
    """A :data:`~shopaug.serve.backend.BackendLoader` for fake model directories.

    Sleeps ``load_seconds`` first, to stand in for a slow model load in hot-swap tests.
    """
    path = Path(model_dir) / FAKE_MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; expected a fake model directory")
    payload = json.loads(path.read_text(encoding="utf-8"))
    time.sleep(float(payload.get("load_seconds", 0.0)))
    return FakeBackend(str(payload["version"]), payload["products"])


#: A tiny catalog for tests and demos: search answers are known by word overlap.
SMALL_CATALOG: tuple[dict[str, str], ...] = (
    {"id": "p1", "title": "blue velvet sofa", "category": "sofas"},
    {"id": "p2", "title": "grey linen sofa", "category": "sofas"},
    {"id": "p3", "title": "oak dining table", "category": "tables"},
    {"id": "p4", "title": "round oak coffee table", "category": "tables"},
    {"id": "p5", "title": "blue ceramic lamp", "category": "lamps"},
    {"id": "p6", "title": "brass floor lamp", "category": "lamps"},
)
