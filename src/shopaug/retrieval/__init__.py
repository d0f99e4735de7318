"""Retrievers over a catalog: BM25, dense (encoder + vector index) and hybrid (RRF)."""

from shopaug.retrieval.retrievers import (
    RETRIEVERS,
    BM25Retriever,
    DenseRetriever,
    HybridRetriever,
    Retriever,
    RetrieverConfig,
    build_retriever,
    reciprocal_rank_fusion,
)

__all__ = [
    "RETRIEVERS",
    "BM25Retriever",
    "DenseRetriever",
    "HybridRetriever",
    "Retriever",
    "RetrieverConfig",
    "build_retriever",
    "reciprocal_rank_fusion",
]
