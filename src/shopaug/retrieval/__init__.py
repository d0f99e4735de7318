"""Retrieval: catalog + model -> index -> ranked run.

* :mod:`shopaug.retrieval.ranking`: :func:`rank_catalog`, :func:`encode_and_rank` and
  :class:`CatalogRanker`, the one place that ranks a catalog with a model's vectors (an
  optional row subset, precomputed item vectors);
* :mod:`shopaug.retrieval.retrievers`: retrievers over a catalog: BM25, dense (encoder +
  vector index) and hybrid (RRF);
* :mod:`shopaug.retrieval.catalog`: a run's catalog and its vectors under a model.
"""

from shopaug.retrieval.ranking import CatalogRanker, Run, encode_and_rank, rank_catalog
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
    "CatalogRanker",
    "DenseRetriever",
    "HybridRetriever",
    "Retriever",
    "RetrieverConfig",
    "Run",
    "build_retriever",
    "encode_and_rank",
    "rank_catalog",
    "reciprocal_rank_fusion",
]
