"""Baseline recommenders: known orderings on tiny baskets, and ALS/BPR through implicit."""

from __future__ import annotations

import numpy as np
import pytest

from shopaug.models.recommenders import (
    CoOccurrence,
    FactorConfig,
    ImplicitFactors,
    Interactions,
    Popularity,
    RepeatPurchase,
    top_k,
)

ITEMS = ["a", "b", "c", "d", "new"]
BASKETS = [
    ("u1", ["a", "b"]),
    ("u1", ["a", "c"]),
    ("u2", ["a", "b"]),
    ("u2", ["b"]),
    ("u3", ["c", "d"]),
    ("u3", ["d"]),
]


@pytest.fixture
def data() -> Interactions:
    return Interactions.from_baskets(item_ids=ITEMS, baskets=BASKETS)


def test_interactions_counts(data: Interactions) -> None:
    assert data.item_counts().tolist() == [3, 3, 2, 2, 0]
    assert data.customers == ("u1", "u2", "u3")
    assert data.user_items.toarray()[0].tolist() == [2, 1, 1, 0, 0]
    with pytest.raises(KeyError, match="outside the catalog"):
        Interactions.from_baskets(item_ids=["a"], baskets=[("u", ["zz"])])


def test_popularity_and_repeat_purchase(data: Interactions) -> None:
    assert top_k(Popularity(data).score(["x"], [[]]), 3).tolist() == [[0, 1, 2]]
    # u3 bought d twice, c once (c earlier); then popular items a, b; the new item last
    ranked = top_k(RepeatPurchase(data).score(["u3"], [[2, 3, 3]]), 5)
    assert [ITEMS[i] for i in ranked[0]] == ["d", "c", "a", "b", "new"]
    # equal counts: the most recent first
    ranked = top_k(RepeatPurchase(data).score(["x"], [[1, 2]]), 2)
    assert [ITEMS[i] for i in ranked[0]] == ["c", "b"]


def test_co_occurrence(data: Interactions) -> None:
    scores = CoOccurrence(data).score(["x"], [[3]])  # bought d: d co-occurs with c only
    assert ITEMS[int(top_k(scores, 1)[0, 0])] == "c"
    # cosine: c and d share 1 basket, counts 2 and 2 -> 1 / sqrt(2 * 2)
    assert scores[0, 2] == pytest.approx(0.5, abs=1e-5)


@pytest.mark.parametrize("kind", ["als", "bpr"])
def test_implicit_factor_models(data: Interactions, kind: str) -> None:
    pytest.importorskip("implicit")
    config = FactorConfig(factors=8, iterations=50, seed=0, threads=1, learning_rate=0.05)
    model = ImplicitFactors(data, kind, config)
    scores = model.score(["u3", "ad-hoc"], [[2, 3], [2, 3]])
    assert scores.shape == (2, 5)
    assert np.isneginf(scores[:, 4]).all()  # never-bought item ranks last
    if kind == "als":  # BPR's sampled updates are too noisy on six baskets to assert order
        assert set(top_k(scores[:1], 2)[0].tolist()) == {2, 3}  # u3's own items
    again = ImplicitFactors(data, kind, config).score(["u3"], [[2, 3]])
    np.testing.assert_allclose(again, scores[:1])  # same seed, same model


def test_top_k_orders_and_breaks_ties_by_row() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.9], [1.0, 0.0, 0.0, 0.0]])
    assert top_k(scores, 3).tolist() == [[1, 3, 2], [0, 1, 2]]


def test_top_k_breaks_a_tie_at_the_cut_off_by_row() -> None:
    # 40 best scores, then 240 tied ones: the 5 tied places after the 40 go to the lowest
    # rows of the tie (argpartition alone picks an arbitrary subset of it)
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.1] * 40])
    found = top_k(scores, 45)[0].tolist()
    assert found[:40] == list(range(1, 320, 8))
    assert found[40:] == [0, 2, 3, 4, 5]
    assert top_k(scores, 60)[0].tolist()[:45] == found  # a shorter list is a prefix
