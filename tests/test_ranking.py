"""retrieval.ranking: the one way a catalog is ranked with a model's vectors."""

from __future__ import annotations

import numpy as np
import pytest

from shopaug.encoders.base import HashingEncoder
from shopaug.retrieval.ranking import CatalogRanker, encode_and_rank, rank_catalog

IDS = ["a", "b", "c", "d"]
ITEMS = np.array([[1, 0], [0.6, 0.8], [0, 1], [0.8, 0.6]], dtype=np.float32)


def test_rank_catalog_matches_hand_computed_scores() -> None:
    query = np.array([[0.0, 1.0]], dtype=np.float32)
    run = rank_catalog(query, ITEMS, IDS, query_ids=["q"], depth=3)
    assert [pid for pid, _ in run["q"]] == ["c", "b", "d"]
    assert [score for _, score in run["q"]] == pytest.approx([1.0, 0.8, 0.6])


def test_row_subset_ranks_only_those_rows_and_pads_nothing() -> None:
    query = np.array([[0.0, 1.0]], dtype=np.float32)
    run = rank_catalog(query, ITEMS, IDS, query_ids=["q"], depth=10, rows=np.array([3, 0, 1]))
    assert [pid for pid, _ in run["q"]] == ["b", "d", "a"]
    assert [score for _, score in run["q"]] == pytest.approx([0.8, 0.6, 0.0])
    tied = rank_catalog(query, ITEMS[[1, 1]], ["x", "y"], query_ids=["q"], depth=2, rows=[1, 0])
    assert [pid for pid, _ in tied["q"]] == ["x", "y"]  # ties in a subset: catalog order
    rows, scores = CatalogRanker(ITEMS, IDS).search(query[0], 5, np.array([0]))
    assert rows.tolist() == [[0, -1, -1, -1, -1]] and np.isneginf(scores[0, 1:]).all()


def test_encode_and_rank_encodes_only_the_subset_and_agrees_with_precomputed() -> None:
    encoder = HashingEncoder(64)
    texts = ["red sofa", "blue lamp", "red rug", "green desk"]
    queries = {"q1": "red sofa", "q2": "lamp"}
    rows = np.array([0, 2, 3])
    encoded: list[str] = []
    original = encoder.encode

    def counting(batch, *, show_progress=False):
        encoded.extend(batch)
        return original(batch, show_progress=show_progress)

    encoder.encode = counting  # type: ignore[method-assign]
    subset = encode_and_rank(encoder, queries, texts, IDS, depth=2, rows=rows)
    assert "blue lamp" not in encoded  # row 1 is outside the subset
    precomputed = encode_and_rank(
        encoder, queries, texts, IDS, depth=2, rows=rows, item_vectors=original(texts)
    )
    for qid in queries:
        assert [p for p, _ in subset[qid]] == [p for p, _ in precomputed[qid]]
        assert [s for _, s in subset[qid]] == pytest.approx([s for _, s in precomputed[qid]])
    assert subset["q1"][0][0] == "a" and {p for p, _ in subset["q2"]} <= {"a", "c", "d"}


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="one vector per id"):
        CatalogRanker(ITEMS, IDS).run(["q1", "q2"], ITEMS[:1], depth=1)
    with pytest.raises(ValueError, match="4 product"):
        CatalogRanker(ITEMS[:3], IDS)
