"""shopaug run: fusion of runs, selection on validation only, the reranker gate."""

from __future__ import annotations

import pytest

from shopaug.experiment.runner import System, gate_reranker, select_system
from shopaug.retrieval.fusion import convex_fuse, pick_weight, rrf_fuse


def test_rrf_known_answer() -> None:
    a = {"q": [("x", 9.0), ("y", 8.0)]}
    b = {"q": [("y", 0.5), ("z", 0.4)]}
    fused = rrf_fuse([a, b], depth=3, rrf_k=60)
    assert [pid for pid, _ in fused["q"]] == ["y", "x", "z"]
    assert fused["q"][0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_convex_known_answer_and_weight_range() -> None:
    dense = {"q": [("x", 0.9), ("y", 0.5), ("z", 0.1)]}
    bm25 = {"q": [("z", 10.0), ("y", 5.0)]}
    fused = convex_fuse(dense, bm25, weight=0.75, depth=3)
    # x: 0.75*1 + 0.25*0 ; y: 0.75*0.5 + 0.25*0 ; z: 0.75*0 + 0.25*1
    assert fused["q"] == [("x", 0.75), ("y", 0.375), ("z", 0.25)]
    with pytest.raises(ValueError, match="weight"):
        convex_fuse(dense, bm25, weight=1.5, depth=3)


def test_pick_weight_reads_only_the_given_score() -> None:
    dense = {"q": [("good", 0.2), ("bad", 0.9)]}
    bm25 = {"q": [("good", 9.0), ("bad", 1.0)]}

    def score(run) -> float:  # validation: "good" first is best
        return 1.0 if run["q"][0][0] == "good" else 0.0

    assert pick_weight(dense, bm25, weights=(0.9, 0.8, 0.3), depth=2, score=score) == 0.3


def _scored(valid: float, test: float) -> tuple[dict, dict]:
    return ({"ndcg@10": {"v1": valid, "v2": valid}}, {"ndcg@10": {"t1": test, "t2": test}})


def test_selection_never_reads_test_queries() -> None:
    systems = [System("bm25", "baseline"), System("a", "augmented"), System("b", "augmented")]
    scored = {"bm25": _scored(0.5, 0.5), "a": _scored(0.6, 0.99), "b": _scored(0.7, 0.1)}
    assert select_system(systems, scored).name == "b"
    # a planted test-only signal does not change the choice
    scored["b"] = _scored(0.7, 0.0)
    scored["a"] = _scored(0.6, 1.0)
    assert select_system(systems, scored).name == "b"


def test_reranker_served_only_when_it_wins_on_validation() -> None:
    first, reranked = System("a", "augmented"), System("a + reranker", "reranker")
    scored = {"a": _scored(0.7, 0.5), "a + reranker": _scored(0.6, 0.9)}
    chosen, decision = gate_reranker(first, reranked, scored)
    assert chosen is first and decision["served"] is False
    scored["a + reranker"] = _scored(0.75, 0.1)
    chosen, decision = gate_reranker(first, reranked, scored)
    assert chosen is reranked and decision["served"] is True
    assert decision["validation_reranked"] == pytest.approx(0.75)


def test_text_field_and_tower_choices_read_validation_queries_only() -> None:
    """choose_per_fold (what benchmarks/relevance.py and the tower table choose with) gives the
    same choices whatever the test queries say."""
    from shopaug.eval.selection import best_on_validation, choose_per_fold

    validation = [["v1", "v2"], ["v3", "v4"]]
    per_query = {
        "name": {"v1": 0.5, "v2": 0.5, "v3": 0.9, "v4": 0.9, "t1": 0.1, "t2": 0.1},
        "name+class": {"v1": 0.7, "v2": 0.6, "v3": 0.2, "v4": 0.2, "t1": 0.1, "t2": 0.1},
    }
    assert choose_per_fold(per_query, validation) == ["name+class", "name"]
    planted = {name: dict(values) for name, values in per_query.items()}
    planted["name"].update(t1=1.0, t2=1.0)  # a test-only signal for "name"
    planted["name+class"].update(t1=0.0, t2=0.0)
    assert choose_per_fold(planted, validation) == ["name+class", "name"]
    assert best_on_validation({"query": {}, "full": {}}) == "query"
    assert best_on_validation({"query": {"v": 0.5}, "full": {"v": 0.5}}) == "query"  # tie
