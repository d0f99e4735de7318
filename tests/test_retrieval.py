"""BM25, the vector index (FAISS and numpy agree), the embedding cache and RRF fusion."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from shopaug.encoders.base import HashingEncoder
from shopaug.encoders.cache import CachedEncoder, EmbeddingCache
from shopaug.index.vector import VectorIndex
from shopaug.retrieval import (
    BM25Retriever,
    DenseRetriever,
    HybridRetriever,
    reciprocal_rank_fusion,
)

TEXTS = [
    "blue velvet sofa",
    "red velvet sofa",
    "oak coffee table",
    "brass floor lamp",
    "wool area rug",
]


def test_bm25_ranks_term_matches_and_pads_non_matches() -> None:
    rows, scores = BM25Retriever(TEXTS).search(["velvet sofa", "coffee tables", "xyzzy"], 3)
    assert set(rows[0, :2]) == {0, 1} and rows[0, 2] == -1  # only two products match
    assert rows[1, 0] == 2  # stemming: tables -> table
    assert (rows[2] == -1).all() and np.isneginf(scores[2]).all()


def test_vector_index_numpy_matches_faiss() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    items = rng.normal(size=(300, 16)).astype(np.float32)
    queries = rng.normal(size=(40, 16)).astype(np.float32)
    faiss_rows, faiss_scores = VectorIndex(items, backend="faiss", chunk_size=7).search(queries, 10)
    numpy_rows, numpy_scores = VectorIndex(items, backend="numpy", chunk_size=7).search(queries, 10)
    np.testing.assert_array_equal(faiss_rows, numpy_rows)
    np.testing.assert_allclose(faiss_scores, numpy_scores, rtol=1e-5)
    expected = np.argsort(-(queries @ items.T), axis=1)[:, :10]
    np.testing.assert_array_equal(numpy_rows, expected)


def test_vector_index_pads_when_k_exceeds_catalog() -> None:
    rows, scores = VectorIndex(np.eye(3, dtype=np.float32), backend="numpy").search(
        np.array([[0.0, 1.0, 0.0]], dtype=np.float32), 5
    )
    assert rows.tolist() == [[1, 0, 2, -1, -1]]
    assert np.isneginf(scores[0, 3:]).all()


class CountingEncoder(HashingEncoder):
    def __init__(self) -> None:
        super().__init__(dim=64)
        self.encoded: list[str] = []

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        self.encoded.extend(texts)
        return super().encode(texts)


def test_cache_encodes_each_text_once_across_instances(tmp_path: Path) -> None:
    inner = CountingEncoder()
    first = CachedEncoder(inner, EmbeddingCache(tmp_path / "e.sqlite"))
    vectors = first.encode(["a b", "c d", "a b"])
    assert inner.encoded == ["a b", "c d"]
    second = CachedEncoder(inner, EmbeddingCache(tmp_path / "e.sqlite"))  # a new process, say
    again = second.encode(["c d", "a b", "e f"])
    assert inner.encoded == ["a b", "c d", "e f"]
    np.testing.assert_array_equal(again[:2], vectors[[1, 0]])
    np.testing.assert_array_equal(vectors, HashingEncoder(64).encode(["a b", "c d", "a b"]))


def test_a_long_list_is_read_back_as_one_matrix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shopaug.encoders.cache.MATRIX_MIN_TEXTS", 3)
    texts = ["a b", "c d", "e f", "a b"]
    inner = CountingEncoder()
    vectors = CachedEncoder(inner, EmbeddingCache(tmp_path / "e.sqlite")).encode(texts)
    (matrix_file,) = (tmp_path / "matrices").glob("*.npy")
    assert inner.encoded == ["a b", "c d", "e f"]
    second = CachedEncoder(inner, EmbeddingCache(tmp_path / "e.sqlite", memory=False))
    np.testing.assert_array_equal(second.encode(texts), vectors)  # the matrix, nothing encoded
    assert inner.encoded == ["a b", "c d", "e f"] and second.hits == 4
    reordered = second.encode(texts[::-1])  # another list: per text, from the cache
    np.testing.assert_array_equal(reordered, vectors[::-1])
    assert inner.encoded == ["a b", "c d", "e f"]
    matrix_file.write_bytes(b"not a matrix")  # a broken file only costs time
    np.testing.assert_array_equal(second.encode(texts), vectors)
    changed = second.encode(["a b", "c d", "g h"])
    assert inner.encoded[-1] == "g h"
    np.testing.assert_array_equal(changed, HashingEncoder(64).encode(["a b", "c d", "g h"]))


def test_dense_retriever_with_hashing_encoder() -> None:
    retriever = DenseRetriever(TEXTS, HashingEncoder(), show_progress=False)
    rows, _ = retriever.search(["velvet sofa blue", "lamp"], 2)
    assert rows[0, 0] == 0 and rows[1, 0] == 3


def test_rrf_known_answer() -> None:
    # ranking A: 3, 1, 2 ; ranking B: 1, 4
    # score(1) = 1/62 + 1/61, score(3) = 1/61, score(4) = 1/62, score(2) = 1/63
    rows, scores = reciprocal_rank_fusion(
        [np.array([[3, 1, 2]]), np.array([[1, 4, -1]])], k=4, rrf_k=60
    )
    assert rows.tolist() == [[1, 3, 4, 2]]
    np.testing.assert_allclose(scores[0], [1 / 62 + 1 / 61, 1 / 61, 1 / 62, 1 / 63], rtol=1e-6)


def test_hybrid_retriever_fuses_both() -> None:
    hybrid = HybridRetriever(
        [BM25Retriever(TEXTS), DenseRetriever(TEXTS, HashingEncoder(), show_progress=False)],
        depth=5,
    )
    rows, _ = hybrid.search(["velvet sofa"], 3)
    assert set(rows[0, :2]) == {0, 1}
    assert "rrf(" in hybrid.id
