"""Exact inner-product nearest-neighbour search: FAISS when installed, numpy otherwise.

Both paths score queries in chunks, so memory stays flat as the query set grows.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def _faiss():
    try:
        import faiss

        return faiss
    except ImportError:
        return None


class VectorIndex:
    """Exact maximum-inner-product search over ``vectors`` (n_items, dim), float32.

    Args:
        vectors: item embeddings (normalised for cosine similarity).
        backend: ``"auto"`` (FAISS if importable), ``"faiss"`` or ``"numpy"``.
        chunk_size: queries scored per chunk.
    """

    def __init__(
        self, vectors: np.ndarray, *, backend: str = "auto", chunk_size: int = 1024
    ) -> None:
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D (n_items, dim), got shape {vectors.shape}")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.chunk_size = chunk_size
        faiss = _faiss() if backend in ("auto", "faiss") else None
        if backend == "faiss" and faiss is None:
            raise ImportError("faiss is not installed; run: pip install 'shopaug[train]'")
        self.backend = "faiss" if faiss is not None else "numpy"
        self._index = None
        if faiss is not None:
            self._index = faiss.IndexFlatIP(self.vectors.shape[1])
            self._index.add(self.vectors)

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows and scores per query, each (n_queries, k), best first; -1 pads."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        n = queries.shape[0]
        rows = np.full((n, k), -1, dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        k_eff = min(k, self.size)
        if n == 0 or k_eff == 0:
            return rows, scores
        for start in range(0, n, self.chunk_size):
            chunk = queries[start : start + self.chunk_size]
            if self._index is not None:
                found_scores, found_rows = self._index.search(chunk, k_eff)
            else:
                found_rows, found_scores = _numpy_top_k(self.vectors, chunk, k_eff)
            rows[start : start + len(chunk), :k_eff] = found_rows
            scores[start : start + len(chunk), :k_eff] = found_scores
        return rows, scores


def _numpy_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    similarity = queries @ vectors.T  # (chunk, n_items)
    if k < similarity.shape[1]:
        part = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(similarity.shape[1]), (len(queries), 1))
    part_scores = np.take_along_axis(similarity, part, axis=1)
    # Sort by score descending, ties by row ascending (as FAISS does).
    order = np.lexsort((part, -part_scores), axis=1)
    rows = np.take_along_axis(part, order, axis=1)
    return rows, np.take_along_axis(part_scores, order, axis=1)
