"""A text two-tower recommender: items by their names, customers by the items they bought.

Item tower: the frozen MiniLM vector of the product's text (computed once through the
embedding cache by the caller) plus a trainable residual layer, ``v_i = norm(t_i + W_i t_i)``.
User tower: the mean of the text vectors of the customer's last ``max_history`` purchases plus
its own residual layer, ``u = norm(h + W_u h)``. The score is ``u . v_i``. Both layers start at
zero, so an untrained model is the zero-shot text similarity between a history and an item.
A new item (no purchase before the cut) has a text vector like any other, so it can be
recommended; ID models (ALS, BPR, co-occurrence) cannot.

A served model directory (``model/`` of a ``task: recommend`` run) also holds what the service
needs beside the weights, written by :func:`save_serving_data` and read by
:func:`load_serving_data`: ``titles.json`` (item id -> title) and ``customers.json`` (the cut
date and, per customer known before it, the purchases the user tower reads: the last
``max_history`` item ids, oldest first, repeats kept).

It is a two-tower model for :func:`shopaug.train.fit`: a "query" is a customer's history written
as item ids joined by spaces (:func:`history_text`), an "item" is an item id. Weights and item
vectors are saved as safetensors, the catalog and settings as JSON; nothing is pickled.

Example:
    >>> import numpy as np
    >>> model = TwoTowerRecommender(["a", "b"], np.eye(2, dtype=np.float32))
    >>> model.score_histories([[0]]).round(3).tolist()
    [[1.0, 0.0]]
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shopaug.errors import ConfigError
from shopaug.models.model_dir import (
    MODEL_DESCRIPTOR,
    RECOMMENDER_KIND,
    read_descriptor,
    write_descriptor,
)

logger = logging.getLogger(__name__)

KIND = RECOMMENDER_KIND
#: The one descriptor file name, under the name serve/recommender_backend.py imports.
DESCRIPTOR = MODEL_DESCRIPTOR
WEIGHTS = "model.safetensors"
TITLES = "titles.json"
CUSTOMERS = "customers.json"


def history_text(item_ids: Sequence[str]) -> str:
    """A history as the text :meth:`TwoTowerRecommender.embed_queries` reads."""
    return " ".join(item_ids)


class TwoTowerRecommender(nn.Module):
    """Frozen item text vectors, trainable residual item and user layers.

    Args:
        item_ids: The catalog; ids must not contain whitespace.
        text_vectors: ``(n_items, dim)`` text embeddings of the items, catalog order.
        max_history: Only the last this many purchases form the user vector.

    Raises:
        ValueError: Ids with whitespace or repeated, or vectors of the wrong shape.
    """

    text_vectors: torch.Tensor  # (n_items, dim), a buffer: saved, never trained

    def __init__(
        self, item_ids: Sequence[str], text_vectors: np.ndarray, *, max_history: int = 50
    ) -> None:
        super().__init__()
        vectors = np.asarray(text_vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(item_ids):
            raise ValueError(
                f"text_vectors has shape {vectors.shape}; expected ({len(item_ids)}, dim)"
            )
        bad = [item for item in item_ids if not item or any(c.isspace() for c in item)]
        if bad:
            raise ValueError(f"item ids must be non-empty without whitespace, got {bad[:3]}")
        self.item_ids = tuple(item_ids)
        self.rows = {item: row for row, item in enumerate(self.item_ids)}
        if len(self.rows) != len(self.item_ids):
            raise ValueError("item ids must be unique")
        self.max_history = int(max_history)
        dim = vectors.shape[1]
        self.register_buffer("text_vectors", torch.from_numpy(vectors.copy()))
        self.item_layer = nn.Linear(dim, dim)
        self.user_layer = nn.Linear(dim, dim)
        for layer in (self.item_layer, self.user_layer):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def dim(self) -> int:
        return int(self.text_vectors.shape[1])

    def _items(self, rows: torch.Tensor) -> torch.Tensor:
        text = self.text_vectors[rows]  # (n, dim)
        return nn.functional.normalize(text + self.item_layer(text), dim=-1)

    def _users(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        pooled = torch.zeros(len(histories), self.dim, device=self.text_vectors.device)
        for row, history in enumerate(histories):
            recent = list(history)[-self.max_history :]
            if recent:
                pooled[row] = self.text_vectors[torch.as_tensor(recent)].mean(dim=0)
        return nn.functional.normalize(pooled + self.user_layer(pooled), dim=-1)  # (n, dim)

    def history_rows(self, text: str) -> list[int]:
        """Item rows of a history text; ids outside the catalog are skipped."""
        return [self.rows[item] for item in text.split() if item in self.rows]

    def embed_queries(self, texts: Sequence[str]) -> torch.Tensor:
        """User vectors ``(len(texts), dim)`` of histories written by :func:`history_text`."""
        return self._users([self.history_rows(text) for text in texts])

    def embed_items(self, texts: Sequence[str]) -> torch.Tensor:
        """Item vectors ``(len(texts), dim)`` of item ids.

        Raises:
            KeyError: An id outside the catalog.
        """
        missing = [text for text in texts if text not in self.rows]
        if missing:
            raise KeyError(f"item ids outside the model's catalog: {missing[:3]}")
        rows = torch.as_tensor([self.rows[text] for text in texts], dtype=torch.long)
        return self._items(rows.to(self.text_vectors.device))

    @torch.no_grad()
    def item_matrix(self) -> np.ndarray:
        """``(n_items, dim)`` item vectors of the whole catalog, L2-normalised."""
        rows = torch.arange(len(self.item_ids), device=self.text_vectors.device)
        return self._items(rows).cpu().numpy()

    @torch.no_grad()
    def user_matrix(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """``(n, dim)`` user vectors of histories given as item rows."""
        return self._users(histories).cpu().numpy()

    def score_histories(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """``(n, n_items)`` scores of every catalog item for each history."""
        return self.user_matrix(histories) @ self.item_matrix().T

    def save(self, directory: str | Path) -> None:
        """Write ``model.safetensors`` and ``shopaug-model.json`` into ``directory``."""
        from safetensors.torch import save_file

        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()
        }
        save_file(state, str(folder / WEIGHTS))
        descriptor = {
            "kind": KIND,
            "item_ids": list(self.item_ids),
            "dim": self.dim,
            "max_history": self.max_history,
        }
        write_descriptor(folder, descriptor)

    @classmethod
    def load(cls, directory: str | Path) -> TwoTowerRecommender:
        """Read a model written by :meth:`save`.

        Raises:
            ConfigError: The descriptor is malformed or of another kind (the message names the
                file and the field).
            FileNotFoundError: A file is missing.
        """
        from safetensors.torch import load_file

        folder = Path(directory)
        descriptor = read_descriptor(folder)
        if descriptor is None:
            raise FileNotFoundError(f"{folder / MODEL_DESCRIPTOR} does not exist")
        if descriptor["kind"] != KIND:
            raise ConfigError(
                f"{folder / MODEL_DESCRIPTOR}: kind {descriptor['kind']!r}, expected {KIND!r}"
            )
        state = load_file(str(folder / WEIGHTS))
        model = cls(
            descriptor["item_ids"],
            state["text_vectors"].numpy(),
            max_history=int(descriptor["max_history"]),
        )
        model.load_state_dict(state)
        return model


@dataclass(frozen=True)
class ServingData:
    """What a served recommender knows beside its weights (see the module docstring).

    Attributes:
        titles: Item id -> title.
        histories: Customer id -> the purchases the user tower reads, oldest first (every
            purchase before the cut with ``repeat_first``, which counts them).
        cut: The date the histories end (exclusive), ISO format.
        repeat_first: Rank the customer's own past items first (most often bought, then most
            recent), then the model's ranking: the run chose "repeat purchase, then" this model.
    """

    titles: Mapping[str, str]
    histories: Mapping[str, tuple[str, ...]]
    cut: str
    repeat_first: bool = False


def save_serving_data(
    directory: str | Path,
    model: TwoTowerRecommender,
    *,
    titles: Mapping[str, str],
    histories: Mapping[str, Sequence[str]],
    cut: str,
    repeat_first: bool = False,
) -> None:
    """Write ``titles.json`` and ``customers.json`` next to ``model``'s weights.

    Only the last ``model.max_history`` purchases of each history are kept (all the user tower
    reads), or every one with ``repeat_first`` (the own items are ranked by how often they were
    bought); ids outside the model's catalog are an error.

    Raises:
        ValueError: A history names an item the model does not know (the message names the
            customer and the item).
    """
    folder = Path(directory)
    kept: dict[str, list[str]] = {}
    for customer in sorted(histories):
        recent = list(histories[customer])
        if not repeat_first:
            recent = recent[-model.max_history :]
        unknown = [item for item in recent if item not in model.rows]
        if unknown:
            raise ValueError(
                f"customer {customer!r}: items {unknown[:3]} are not in the model's catalog"
            )
        kept[str(customer)] = recent
    item_titles = {item: str(titles.get(item, "")) for item in model.item_ids}
    (folder / TITLES).write_text(json.dumps(item_titles, ensure_ascii=False) + "\n", "utf-8")
    payload = {
        "cut": cut,
        "max_history": model.max_history,
        "repeat_first": repeat_first,
        "histories": kept,
    }
    (folder / CUSTOMERS).write_text(json.dumps(payload) + "\n", "utf-8")


def load_serving_data(directory: str | Path) -> ServingData:
    """Read what :func:`save_serving_data` wrote.

    Raises:
        FileNotFoundError: A file is missing (the message names it).
        ValueError: A file does not have the expected shape (the message names it and the field).
    """
    folder = Path(directory)
    for name in (TITLES, CUSTOMERS):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} does not exist; a served recommender directory holds "
                f"{MODEL_DESCRIPTOR}, {WEIGHTS}, {TITLES} and {CUSTOMERS} (written by shopaug run)"
            )
    titles = json.loads((folder / TITLES).read_text("utf-8"))
    customers = json.loads((folder / CUSTOMERS).read_text("utf-8"))
    if not isinstance(titles, dict):
        raise ValueError(f"{folder / TITLES}: expected an object item id -> title")
    histories = customers.get("histories") if isinstance(customers, dict) else None
    if not isinstance(histories, dict) or not all(
        isinstance(items, list) for items in histories.values()
    ):
        raise ValueError(f"{folder / CUSTOMERS}: field 'histories' must map ids to lists of ids")
    repeat_first = customers.get("repeat_first", False)
    if not isinstance(repeat_first, bool):
        raise ValueError(f"{folder / CUSTOMERS}: field 'repeat_first' must be true or false")
    return ServingData(
        titles={str(k): str(v) for k, v in titles.items()},
        histories={str(c): tuple(str(i) for i in items) for c, items in histories.items()},
        cut=str(customers.get("cut", "")),
        repeat_first=repeat_first,
    )
