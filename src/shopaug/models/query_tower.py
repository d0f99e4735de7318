"""Query-side fine-tuning against a frozen catalog tower.

Fine-tuning both towers of a bi-encoder re-encodes every product text of every batch, forward
and backward, and after training re-encodes the whole catalog for each model: on two CPU cores
that is most of the cost of an ablation. A :class:`QueryTowerModel` trains only the query
encoder; products keep the vectors of the frozen base model, read from the embedding cache, so
each product is encoded once per run whatever the number of rows, folds and epochs. Queries are
short (a few tokens), so a training step costs a fraction of a full one.

The trained query encoder is an ordinary sentence-transformers folder; the directory also holds
``shopaug-model.json``::

    {"kind": "query-tower", "item_model": "minilm"}

(plus ``"item_adapter": "item_adapter.safetensors"`` when a linear item adapter was trained),
which says that catalog vectors come from ``item_model`` (a packaged model name or a folder),
not from the query encoder.

Example:
    >>> tower = QueryTowerModel.from_base("minilm")  # doctest: +SKIP
    >>> tower.encode_items(["blue velvet sofa | sofas"]).shape  # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shopaug.encoders.base import Encoder
from shopaug.encoders.cache import build_encoder
from shopaug.models.bi_encoder import BiEncoder
from shopaug.models.lora import LoraSettings
from shopaug.models.model_dir import ITEM_ADAPTER_FILE as ADAPTER_FILE
from shopaug.models.model_dir import QUERY_TOWER_KIND, read_descriptor, write_descriptor

logger = logging.getLogger(__name__)


class QueryTowerModel(nn.Module):
    """A trainable query encoder scored against frozen, cached item vectors.

    It is an :class:`~shopaug.train.trainable.EmbeddingModel` and a two-tower model for
    :func:`shopaug.train.fit` (``embed_queries`` has gradients, ``embed_items`` does not), and
    an :class:`~shopaug.encoders.base.Encoder` of queries (``encode``); ``encode_items`` gives
    the catalog side.

    Args:
        query_model: The trainable query encoder (initialised from the item model).
        item_encoder: The frozen item encoder, ideally a
            :class:`~shopaug.encoders.cache.CachedEncoder` so no product is encoded twice.
        item_model: What ``item_encoder`` is (``"minilm"`` or a folder), written by :meth:`save`.
        freeze_word_embeddings: Keep the token embedding table fixed (the transformer layers
            train).
        item_adapter: Also train a linear map over the frozen item vectors (identity at start).
    """

    def __init__(
        self,
        query_model: BiEncoder,
        item_encoder: Encoder,
        item_model: str,
        *,
        freeze_word_embeddings: bool = True,
        item_adapter: bool = False,
    ) -> None:
        super().__init__()
        self.query_model = query_model
        self.item_encoder = item_encoder
        self.item_model = item_model
        self.item_adapter: nn.Linear | None = None
        if item_adapter:
            # A linear map over the frozen item vectors, starting as the identity: the item
            # side adapts at the cost of one (dim, dim) product per item.
            dim = query_model.dim
            self.item_adapter = nn.Linear(dim, dim, bias=False)
            with torch.no_grad():
                self.item_adapter.weight.copy_(torch.eye(dim))
        if freeze_word_embeddings:
            # Half of MiniLM's weights are the vocabulary table; queries use few of its rows,
            # and updating all of it every step costs more than the transformer's update.
            for name, parameter in query_model.named_parameters():
                if "word_embeddings" in name:
                    parameter.requires_grad_(False)

    @classmethod
    def from_base(
        cls,
        base: str = "minilm",
        *,
        item_encoder: Encoder | None = None,
        query_dir: str | Path | None = None,
        item_adapter: bool = False,
        lora: LoraSettings | None = None,
    ) -> QueryTowerModel:
        """A query tower initialised from ``base`` (or from ``query_dir``), items by ``base``.

        Args:
            base: ``"minilm"`` or a sentence-transformers folder: the frozen item tower.
            item_encoder: The encoder of items (default: ``base`` through the embedding cache).
            query_dir: Start the query encoder from this folder instead of ``base``.
            item_adapter: Train a linear map over the frozen item vectors too.
            lora: Train LoRA adapters in the query encoder instead of its weights (the
                item adapter, if any, trains as well); :meth:`save` writes merged weights.
        """
        if item_encoder is None:
            item_encoder = cached_item_encoder(base)
        start = query_dir if query_dir is not None else (None if base == "minilm" else base)
        query_model = BiEncoder(start, lora=lora)
        return cls(query_model, item_encoder, base, item_adapter=item_adapter)

    @property
    def id(self) -> str:
        """The query encoder's weights id (items are the fixed ``item_model``)."""
        return f"query-tower:{self.query_model.id}"

    @property
    def dim(self) -> int:
        return self.query_model.dim

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """Query vectors ``(len(texts), dim)``, L2-normalised, without gradients."""
        return self.query_model.encode(texts, show_progress=show_progress)

    def encode_items(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """Item vectors ``(len(texts), dim)``: the frozen tower's, through the adapter if any."""
        vectors = self.item_encoder.encode(list(texts), show_progress=show_progress)
        if self.item_adapter is None:
            return vectors
        with torch.no_grad():
            tensor = torch.from_numpy(np.ascontiguousarray(vectors))
            return _adapt(self.item_adapter, tensor).cpu().numpy()

    def embed_queries(self, texts: Sequence[str]) -> torch.Tensor:
        """Differentiable query vectors ``(len(texts), dim)``."""
        return self.query_model.embed(texts)

    def embed_items(self, texts: Sequence[str]) -> torch.Tensor:
        """Item vectors ``(len(texts), dim)``: frozen, with gradients only through the adapter."""
        frozen = self.item_encoder.encode(list(texts))
        vectors = torch.from_numpy(np.ascontiguousarray(frozen)).to(self.query_model.device)
        return vectors if self.item_adapter is None else _adapt(self.item_adapter, vectors)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Query vectors: the side that trains."""
        return self.embed_queries(texts)

    def save(self, directory: str | Path) -> None:
        """The query encoder as a sentence-transformers folder, plus the tower descriptor."""
        directory = Path(directory)
        self.query_model.save(directory)
        descriptor: dict[str, object] = {"kind": QUERY_TOWER_KIND, "item_model": self.item_model}
        if self.item_adapter is not None:
            from safetensors.torch import save_file

            save_file(
                {"weight": self.item_adapter.weight.detach().cpu().contiguous()},
                str(directory / ADAPTER_FILE),
            )
            descriptor["item_adapter"] = ADAPTER_FILE
        write_descriptor(directory, descriptor)

    @classmethod
    def load(cls, directory: str | Path, *, item_encoder: Encoder | None = None) -> QueryTowerModel:
        """Read a folder written by :meth:`save`."""
        directory = Path(directory)
        item_model = read_item_model(directory)
        if item_model is None:
            raise ValueError(f"{directory} holds no {QUERY_TOWER_KIND} descriptor")
        adapter = directory / ADAPTER_FILE
        model = cls.from_base(
            item_model,
            item_encoder=item_encoder,
            query_dir=directory,
            item_adapter=adapter.is_file(),
        )
        if model.item_adapter is not None:
            from safetensors.torch import load_file

            with torch.no_grad():
                model.item_adapter.weight.copy_(load_file(str(adapter))["weight"])
        return model


def _adapt(adapter: nn.Linear, vectors: torch.Tensor) -> torch.Tensor:
    """``vectors`` through the item adapter, L2-normalised again ``(n, dim)``."""
    adapted = adapter(vectors.to(adapter.weight.device))
    return torch.nn.functional.normalize(adapted, dim=-1)


def read_item_model(directory: str | Path) -> str | None:
    """The item model named by a query-tower folder's descriptor, or None for other folders.

    Raises:
        ConfigError: the descriptor is malformed (see ``model_dir.read_descriptor``).
    """
    descriptor = read_descriptor(Path(directory))
    if descriptor is None or descriptor["kind"] != QUERY_TOWER_KIND:
        return None
    return str(descriptor["item_model"])


def cached_item_encoder(model: str, cache_dir: str | Path | None = None) -> Encoder:
    """``model`` (``"minilm"`` or a folder) through the embedding cache: the one builder,
    :func:`shopaug.encoders.cache.build_encoder`, under the name its callers know."""
    return build_encoder(model, cache_dir)
