"""Recommendation metrics: hand-computed values and a cross-check against ranx and ir-measures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shopaug.eval.recommend import (
    BasketTruth,
    evaluate_recommendations,
    exposure_metrics,
    new_item_recall,
    per_customer_metrics,
    repeat_explore_metrics,
    tail_share_per_customer,
)


def test_hand_computed_recall_ndcg_mrr() -> None:
    ranked = [["a", "b", "c", "d"], ["x", "y", "z", "a"], ["q"]]
    baskets = [{"b", "d", "e"}, {"a"}, {"w"}]
    scores = per_customer_metrics(ranked=ranked, baskets=baskets, k=3)
    assert scores["recall@3"].tolist() == pytest.approx([1 / 3, 0.0, 0.0])
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert scores["ndcg@3"].tolist() == pytest.approx([(1 / math.log2(3)) / ideal, 0.0, 0.0])
    # MRR reads the whole list, not only the top k
    assert scores["mrr"].tolist() == pytest.approx([0.5, 0.25, 0.0])


def test_tail_share_new_items_and_exposure() -> None:
    segments = {"a": "head", "b": "tail", "c": "tail"}
    shares = tail_share_per_customer(ranked=[["a", "b"], ["n", "a"]], segments=segments, k=2)
    assert shares.tolist() == [0.5, 0.5]  # "n" is unknown: tail
    rows, values = new_item_recall(
        ranked=[["a", "n"], ["n", "m", "a"], ["a"]],
        baskets=[{"a"}, {"n", "m", "a"}, {"n"}],
        new_items={"n", "m"},
        k=1,
    )
    assert rows.tolist() == [1, 2] and values.tolist() == [0.5, 0.0]
    exposure = exposure_metrics(
        ranked=[["a", "b"], ["a", "n"]], catalog=["a", "b", "c", "n"], new_items={"n"}, k=2
    )
    assert exposure["coverage@2"] == 0.75
    assert exposure["new_share@2"] == 0.25
    # counts sorted (0, 1, 1, 2): 2 * (1*0 + 2*1 + 3*1 + 4*2) / (4 * 4) - 5 / 4
    assert exposure["gini@2"] == pytest.approx(2 * 13 / 16 - 5 / 4)
    with pytest.raises(ValueError, match="not in the catalog"):
        exposure_metrics(ranked=[["zz"]], catalog=["a"], k=1)


def test_evaluate_recommendations_summaries_and_missing_customer() -> None:
    truth = BasketTruth(
        baskets={"u1": {"a"}, "u2": {"b", "n"}, "u3": {"c"}},
        catalog=["a", "b", "c", "d", "n"],
        popularity={"a": 10, "b": 5, "c": 1},
        new_items={"n"},
    )
    ranked = {"u1": ["a", "b"], "u2": ["n", "a"], "u3": ["a", "b"]}
    result = evaluate_recommendations(ranked, truth, k=2, n_resamples=200)
    metrics = result["metrics"]
    assert metrics["recall@2"]["mean"] == pytest.approx((1 + 0.5 + 0) / 3)
    low, high = metrics["recall@2"]["ci95"]
    assert low <= metrics["recall@2"]["mean"] <= high
    assert metrics["new_recall@2"] == {"mean": 1.0, "ci95": [None, None], "n": 1}
    assert result["new_item_customers"] == 1
    # head = top 20 % of 5 items = 1 item ("a"); "b" and "n" are tail
    assert metrics["tail_share@2"]["mean"] == pytest.approx((0.5 + 0.5 + 0.5) / 3)
    with pytest.raises(ValueError, match="no ranked list"):
        evaluate_recommendations({"u1": ["a"]}, truth, k=2)


def _random_case(seed: int) -> tuple[list[list[str]], list[set[str]]]:
    rng = np.random.default_rng(seed)
    items = [f"i{j}" for j in range(60)]
    ranked = [list(rng.choice(items, size=30, replace=False)) for _ in range(40)]
    baskets = [set(rng.choice(items, size=int(rng.integers(1, 12)), replace=False)) for _ in ranked]
    return ranked, baskets


def test_recall_ndcg_mrr_match_ranx() -> None:
    ranx = pytest.importorskip("ranx")
    ranked, baskets = _random_case(0)
    ours = per_customer_metrics(ranked=ranked, baskets=baskets, k=20)
    qrels = ranx.Qrels({f"q{r:03d}": {item: 1 for item in b} for r, b in enumerate(baskets)})
    run = ranx.Run(
        {
            f"q{r:03d}": {item: float(100 - i) for i, item in enumerate(lst)}
            for r, lst in enumerate(ranked)
        }
    )
    expected = ranx.evaluate(qrels, run, ["recall@20", "ndcg@20", "mrr"], return_mean=False)
    for name in ("recall@20", "ndcg@20", "mrr"):
        np.testing.assert_allclose(ours[name], expected[name], atol=1e-9)


def test_recall_ndcg_match_ir_measures() -> None:
    ir_measures = pytest.importorskip("ir_measures")
    ranked, baskets = _random_case(1)
    ours = per_customer_metrics(ranked=ranked, baskets=baskets, k=20)
    qrels = [
        ir_measures.Qrel(f"q{r:03d}", item, 1)
        for r, basket in enumerate(baskets)
        for item in basket
    ]
    run = [
        ir_measures.ScoredDoc(f"q{r:03d}", item, float(100 - i))
        for r, lst in enumerate(ranked)
        for i, item in enumerate(lst)
    ]
    measures = [ir_measures.R @ 20, ir_measures.nDCG @ 20, ir_measures.RR]
    found: dict[str, dict[str, float]] = {}
    for metric in ir_measures.iter_calc(measures, qrels, run):
        found.setdefault(str(metric.measure), {})[metric.query_id] = metric.value
    ids = [f"q{r:03d}" for r in range(len(ranked))]
    for ours_name, theirs in (("recall@20", "R@20"), ("ndcg@20", "nDCG@20"), ("mrr", "RR")):
        expected = [found[theirs].get(qid, 0.0) for qid in ids]
        np.testing.assert_allclose(ours[ours_name], expected, atol=1e-9)


def test_explore_recall_excludes_items_bought_before_the_cut() -> None:
    # u1 bought a and b before the cut; next basket {a, c, d}: a is a repeat, c and d explore
    ranked = [["a", "b", "c", "x"], ["a", "q"], ["z", "y"]]
    baskets = [{"a", "c", "d"}, {"q"}, {"y"}]
    bought = [{"a", "b"}, {"a", "q"}, set()]
    split = repeat_explore_metrics(ranked=ranked, baskets=baskets, bought=bought, k=3)
    rows, values = split["explore_recall@3"]
    # u1: c found of {c, d}; u2's basket is all repeats (not measured); u3: y at rank 2
    assert rows.tolist() == [0, 2]
    assert values.tolist() == pytest.approx([0.5, 1.0])
    # the repeat item a at rank 1 counts for repeat recall only, never for explore
    rows, values = split["repeat_recall@3"]
    assert rows.tolist() == [0, 1] and values.tolist() == pytest.approx([1.0, 1.0])
    # explore NDCG@3 of u1: c at rank 3 of ideal [c, d]
    explore_ndcg = split["explore_ndcg@3"][1]
    assert explore_ndcg[0] == pytest.approx((1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    # a ranking of only own items scores 0 on explore, whatever the basket's repeats
    own_only = repeat_explore_metrics(
        ranked=[["a", "b"]], baskets=[{"a", "c"}], bought=[{"a", "b"}], k=2
    )
    assert own_only["explore_recall@2"][1].tolist() == [0.0]
    assert own_only["repeat_recall@2"][1].tolist() == [1.0]
    assert own_only["repeat_share@2"][1].tolist() == [1.0]
    # the share of each top 3 that is repeats: u1 a, b of a, b, c; u2 a, q; u3 none
    assert split["repeat_share@3"][1].tolist() == pytest.approx([2 / 3, 1.0, 0.0])


def test_evaluate_recommendations_splits_repeat_and_explore_by_the_history() -> None:
    truth = BasketTruth(
        baskets={"u1": {"a", "c"}, "u2": {"b"}},
        catalog=["a", "b", "c"],
        popularity={"a": 3, "b": 2, "c": 1},
        bought={"u1": {"a"}},  # u2 bought nothing before the cut: all explore
    )
    result = evaluate_recommendations(
        {"u1": ["a", "b"], "u2": ["b", "a"]}, truth, k=1, n_resamples=50
    )
    metrics = result["metrics"]
    assert result["repeat_customers"] == 1 and result["explore_customers"] == 2
    assert metrics["repeat_recall@1"]["mean"] == 1.0
    assert metrics["explore_recall@1"]["mean"] == pytest.approx((0.0 + 1.0) / 2)
    assert result["per_customer"]["explore_recall@1"] == {"u1": 0.0, "u2": 1.0}
