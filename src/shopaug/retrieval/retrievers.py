"""Retrievers rank catalog rows for query texts. All share :class:`Retriever`.

A retriever returns ``(rows, scores)``, each ``(n_queries, k)``: rows index the catalog given at
construction (``-1`` pads when fewer products match), best first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from shopaug.data.records import DEFAULT_TEXT_FIELDS, Dataset
from shopaug.encoders.base import Encoder
from shopaug.encoders.bm25 import BM25Index
from shopaug.encoders.cache import build_encoder
from shopaug.errors import ConfigError, DataError
from shopaug.index.vector import VectorIndex

logger = logging.getLogger(__name__)


@runtime_checkable
class Retriever(Protocol):
    @property
    def id(self) -> str: ...

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]: ...


class BM25Retriever:
    def __init__(self, texts: Sequence[str], *, k1: float = 1.5, b: float = 0.75) -> None:
        self.index = BM25Index(texts, k1=k1, b=b)

    @property
    def id(self) -> str:
        return self.index.id

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k)


class DenseRetriever:
    """Encodes the catalog once (through the cache when the encoder is cached) into an index."""

    def __init__(
        self, texts: Sequence[str], encoder: Encoder, *, show_progress: bool = True
    ) -> None:
        self.encoder = encoder
        self.item_vectors = encoder.encode(list(texts), show_progress=show_progress)
        self.index = VectorIndex(self.item_vectors)

    @classmethod
    def from_vectors(cls, item_vectors: np.ndarray, encoder: Encoder) -> DenseRetriever:
        """A retriever over catalog vectors already encoded by ``encoder`` (nothing encoded)."""
        retriever = cls.__new__(cls)
        retriever.encoder = encoder
        retriever.item_vectors = item_vectors
        retriever.index = VectorIndex(item_vectors)
        return retriever

    @property
    def id(self) -> str:
        return f"dense:{self.encoder.id}"

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(list(queries))

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(self.encode_queries(queries), k)


def reciprocal_rank_fusion(
    rankings: Sequence[np.ndarray], *, k: int, rrf_k: float = 60.0
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse ranked row lists: score(d) = Σ_r 1 / (rrf_k + rank_r(d)), ranks 1-based.

    Args:
        rankings: each (n_queries, depth) of rows, -1 padded.
        k: rows to return per query.
        rrf_k: the RRF constant (60 in Cormack et al. 2009).

    Returns:
        rows and fused scores, each (n_queries, k); ties broken by the lower row.
    """
    n = rankings[0].shape[0]
    rows = np.full((n, k), -1, dtype=np.int64)
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    for query in range(n):
        fused: dict[int, float] = {}
        for ranking in rankings:
            for rank, row in enumerate(ranking[query], start=1):
                if row >= 0:
                    fused[int(row)] = fused.get(int(row), 0.0) + 1.0 / (rrf_k + rank)
        best = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
        for position, (row, score) in enumerate(best):
            rows[query, position] = row
            scores[query, position] = score
    return rows, scores


class HybridRetriever:
    """Reciprocal rank fusion of several retrievers, each searched to ``depth``."""

    def __init__(
        self, retrievers: Sequence[Retriever], *, depth: int = 1000, rrf_k: float = 60.0
    ) -> None:
        if len(retrievers) < 2:
            raise ConfigError("hybrid retrieval needs at least two retrievers")
        self.retrievers = list(retrievers)
        self.depth = depth
        self.rrf_k = rrf_k

    @property
    def id(self) -> str:
        return "rrf(" + ",".join(r.id for r in self.retrievers) + ")"

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        depth = max(self.depth, k)
        rankings = [retriever.search(queries, depth)[0] for retriever in self.retrievers]
        return reciprocal_rank_fusion(rankings, k=k, rrf_k=self.rrf_k)


RETRIEVERS = ("bm25", "dense", "hybrid")


@dataclass
class RetrieverConfig:
    """How to build a retriever over a catalog.

    Attributes:
        kind: ``bm25``, ``dense`` or ``hybrid``.
        model: dense model: ``minilm`` or a model directory.
        text_fields: product fields in the text (see ``Product.render``).
        cache_dir: embedding cache folder (default ``$SHOPAUG_CACHE_DIR`` or ~/.cache/shopaug).
        hybrid_depth: depth each retriever searches before fusion.
    """

    kind: str = "bm25"
    model: str = "minilm"
    text_fields: tuple[str, ...] = DEFAULT_TEXT_FIELDS
    cache_dir: str | None = None
    hybrid_depth: int = 1000
    show_progress: bool = True
    extra: dict[str, object] = field(default_factory=dict)


def build_retriever(dataset: Dataset, config: RetrieverConfig) -> Retriever:
    """Build the configured retriever over ``dataset.products`` (rows = catalog order)."""
    if config.kind not in RETRIEVERS:
        raise ConfigError(f"unknown retriever {config.kind!r}; expected one of {RETRIEVERS}")
    if not dataset.has_text:
        raise DataError(
            f"data set {dataset.name!r} has no product text, so nothing can be retrieved; "
            "give the product file with --products"
        )
    texts = dataset.product_texts(config.text_fields)
    if config.kind == "bm25":
        return BM25Retriever(texts)
    dense = DenseRetriever(
        texts, build_encoder(config.model, config.cache_dir), show_progress=config.show_progress
    )
    if config.kind == "dense":
        return dense
    return HybridRetriever([BM25Retriever(texts), dense], depth=config.hybrid_depth)
