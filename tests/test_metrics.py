"""Metrics: hand-computed answers, edge cases, and cross-checks against ir-measures and ranx."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from shopaug.errors import DataError
from shopaug.eval.metrics import (
    average_precision_at_k,
    dcg_at_k,
    evaluate_run,
    metric_names,
    mrr_at_k,
    ndcg_at_k,
    parse_metric_name,
    precision_at_k,
    recall_at_k,
)
from shopaug.eval.segments import coverage, gini, mean_by_segment, popularity_segments, tail_share

# One query. Retrieved gains in rank order: 3, 2, 0, 1. The judged products have gains
# 3, 2, 1, 1, 0, so 4 are relevant and one relevant product (gain 1) was not retrieved.
RELEVANCE = np.array([[3.0, 2.0, 0.0, 1.0]])
IDEAL = np.array([[3.0, 2.0, 1.0, 1.0, 0.0]])
N_RELEVANT = np.array([4])


def test_dcg_and_ndcg_by_hand() -> None:
    # DCG@4  = 3/log2(2) + 2/log2(3) + 0/log2(4) + 1/log2(5) = 3 + 1.26186 + 0 + 0.43068 = 4.69254
    # IDCG@4 = 3/log2(2) + 2/log2(3) + 1/log2(4) + 1/log2(5) = 3 + 1.26186 + 0.5 + 0.43068 = 5.19254
    dcg = 3 + 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 3 + 2 / math.log2(3) + 1 / 2 + 1 / math.log2(5)
    assert dcg_at_k(relevance=RELEVANCE, k=4) == pytest.approx([dcg])
    assert ndcg_at_k(relevance=RELEVANCE, ideal=IDEAL, k=4) == pytest.approx([dcg / idcg])
    assert dcg / idcg == pytest.approx(0.903707, abs=1e-6)
    # @2 the ranking is ideal: 3, 2 against 3, 2.
    assert ndcg_at_k(relevance=RELEVANCE, ideal=IDEAL, k=2) == pytest.approx([1.0])
    # @1 a gain-2 product first against an ideal gain of 3: 2/3 (linear gains, not 2**g - 1).
    assert ndcg_at_k(relevance=np.array([[2.0]]), ideal=IDEAL, k=1) == pytest.approx([2 / 3])


def test_binary_metrics_by_hand() -> None:
    # Hits (gain > 0) at ranks 1, 2 and 4 out of 4 relevant judged products.
    assert precision_at_k(relevance=RELEVANCE, k=4) == pytest.approx([3 / 4])
    # A ranking shorter than k still divides by k: 3 hits / 10.
    assert precision_at_k(relevance=RELEVANCE, k=10) == pytest.approx([0.3])
    assert recall_at_k(relevance=RELEVANCE, n_relevant=N_RELEVANT, k=2) == pytest.approx([2 / 4])
    assert recall_at_k(relevance=RELEVANCE, n_relevant=N_RELEVANT, k=4) == pytest.approx([3 / 4])
    # AP@4 = (P@1 + P@2 + P@4) / 4 = (1 + 1 + 3/4) / 4 = 0.6875: divided by all relevant
    # judged products, including the one never retrieved.
    assert average_precision_at_k(relevance=RELEVANCE, n_relevant=N_RELEVANT, k=4) == pytest.approx(
        [0.6875]
    )
    # AP@1 = P@1 / 4 = 0.25
    assert average_precision_at_k(relevance=RELEVANCE, n_relevant=N_RELEVANT, k=1) == pytest.approx(
        [0.25]
    )


def test_mrr_by_hand_several_queries() -> None:
    relevance = np.array(
        [
            [0.0, 0.0, 1.0],  # first hit at rank 3 -> 1/3
            [2.0, 1.0, 0.0],  # rank 1 -> 1
            [0.0, 0.0, 0.0],  # none -> 0
        ]
    )
    assert mrr_at_k(relevance=relevance, k=10) == pytest.approx([1 / 3, 1.0, 0.0])
    # With k=2 the hit at rank 3 no longer counts.
    assert mrr_at_k(relevance=relevance, k=2) == pytest.approx([0.0, 1.0, 0.0])


def test_edge_cases_empty_rankings_no_relevant_and_large_k() -> None:
    empty = np.zeros((2, 0))  # two queries, nothing retrieved
    ideal = np.array([[1.0], [0.0]])
    counts = np.array([1, 0])
    assert ndcg_at_k(relevance=empty, ideal=ideal, k=10).tolist() == [0.0, 0.0]
    assert mrr_at_k(relevance=empty, k=10).tolist() == [0.0, 0.0]
    assert recall_at_k(relevance=empty, n_relevant=counts, k=10).tolist() == [0.0, 0.0]
    assert average_precision_at_k(relevance=empty, n_relevant=counts, k=5).tolist() == [0.0, 0.0]
    assert precision_at_k(relevance=empty, k=3).tolist() == [0.0, 0.0]
    # k far past the ranking: a single relevant product ranked first is perfect.
    one = np.array([[1.0]])
    assert ndcg_at_k(relevance=one, ideal=one, k=1000) == pytest.approx([1.0])
    # No relevant judged product: 0, not a division error.
    assert ndcg_at_k(relevance=one * 0, ideal=one * 0, k=5).tolist() == [0.0]


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="k must be a positive integer"):
        mrr_at_k(relevance=RELEVANCE, k=0)
    with pytest.raises(ValueError, match="2-D"):
        mrr_at_k(relevance=np.array([1.0, 0.0]), k=1)
    with pytest.raises(ValueError, match="n_relevant must have shape"):
        recall_at_k(relevance=RELEVANCE, n_relevant=np.array([1, 2]), k=1)
    with pytest.raises(ValueError, match="ideal has 2 rows"):
        ndcg_at_k(relevance=RELEVANCE, ideal=np.zeros((2, 3)), k=1)


def test_parse_metric_name() -> None:
    assert parse_metric_name("nDCG@10") == ("ndcg", 10)
    assert set(metric_names()) == {"ndcg", "recall", "precision", "mrr", "map"}
    with pytest.raises(ValueError, match="unknown metric 'bleu@4'"):
        parse_metric_name("bleu@4")
    with pytest.raises(ValueError, match="positive cut-off"):
        parse_metric_name("ndcg")
    with pytest.raises(ValueError, match="positive cut-off"):
        parse_metric_name("ndcg@0")


RUN = {"q1": [("a", 0.9), ("b", 0.8), ("c", 0.7)], "q9": [("z", 1.0)]}
QRELS = {
    "q1": {"a": 0, "b": 2, "d": 1},  # c is unjudged
    "q2": {"x": 1},  # not in the run
    "q3": {"y": 0},  # no relevant product
}


def test_evaluate_run_by_hand() -> None:
    scores = evaluate_run(RUN, QRELS, metrics=["ndcg@3", "mrr@10", "recall@1", "map@3"])
    # Default queries: those with a relevant product, sorted -> q1, q2 (q2 scores 0, missing).
    # q1 gains in rank order: 0, 2, 0.  ideal: 2, 1, 0.
    # nDCG@3 = (2/log2(3)) / (2 + 1/log2(3)) = 1.26186 / 2.63093 = 0.47962
    assert scores["ndcg@3"] == pytest.approx([(2 / math.log2(3)) / (2 + 1 / math.log2(3)), 0])
    assert scores["mrr@10"] == pytest.approx([0.5, 0.0])
    assert scores["recall@1"] == pytest.approx([0.0, 0.0])
    # AP@3 = P@2 / 2 relevant = (1/2) / 2 = 0.25
    assert scores["map@3"] == pytest.approx([0.25, 0.0])


def test_evaluate_run_explicit_query_order_and_no_relevant_query() -> None:
    scores = evaluate_run(RUN, QRELS, metrics=["mrr@10"], query_ids=["q3", "q1"])
    assert scores["mrr@10"].tolist() == [0.0, 0.5]


def test_evaluate_run_judged_only_skips_unjudged_products() -> None:
    run = {"q1": [("c", 0.9), ("u", 0.8), ("b", 0.7)]}  # c and u unjudged, b has gain 2
    plain = evaluate_run(run, QRELS, metrics=["mrr@10", "precision@1"], query_ids=["q1"])
    judged = evaluate_run(
        run, QRELS, metrics=["mrr@10", "precision@1"], query_ids=["q1"], judged_only=True
    )
    assert plain["mrr@10"].tolist() == [pytest.approx(1 / 3)]
    assert judged["mrr@10"].tolist() == [1.0]
    assert plain["precision@1"].tolist() == [0.0]
    assert judged["precision@1"].tolist() == [1.0]


def test_evaluate_run_empty_run_scores_zero() -> None:
    scores = evaluate_run({}, QRELS)
    assert set(scores) == {"ndcg@10", "recall@100", "mrr@10", "map@100"}
    assert all(values.tolist() == [0.0, 0.0] for values in scores.values())


def test_evaluate_run_errors() -> None:
    with pytest.raises(DataError, match="appears twice"):
        evaluate_run({"q1": [("b", 1.0), ("b", 0.5)]}, QRELS)
    with pytest.raises(DataError, match="rank 2: expected a \\(product id, score\\) pair"):
        evaluate_run({"q1": [("a", 1.0), "b"]}, QRELS)  # type: ignore[list-item]
    with pytest.raises(DataError, match="gain must be a finite number >= 0"):
        evaluate_run(RUN, {"q1": {"a": -1}}, query_ids=["q1"])
    with pytest.raises(DataError, match="no judgments in qrels"):
        evaluate_run(RUN, QRELS, query_ids=["q1", "nope"])
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_run(RUN, QRELS, metrics=["ndcg@10", "err@10"])


# --- cross-checks on random data -----------------------------------------------------------

CROSS_METRICS = ["ndcg@10", "ndcg@5", "recall@100", "recall@10", "mrr@10", "map@100", "map@10"]
CROSS_METRICS += ["precision@10"]


def random_benchmark(
    seed: int = 7,
) -> tuple[dict[str, list[tuple[str, float]]], dict[str, dict[str, int]]]:
    """50 queries, graded gains 0-3, tie-free descending scores, unjudged products in runs."""
    rng = np.random.default_rng(seed)
    run: dict[str, list[tuple[str, float]]] = {}
    qrels: dict[str, dict[str, int]] = {}
    for number in range(50):
        query_id = f"q{number:02d}"
        pool = [f"p{index}" for index in rng.choice(400, size=160, replace=False)]
        judged = pool[: int(rng.integers(1, 60))]
        qrels[query_id] = {product: int(rng.integers(0, 4)) for product in judged}
        ranked = rng.permutation(pool)[: int(rng.integers(1, 140))]
        scores = np.sort(rng.random(len(ranked)))[::-1]
        run[query_id] = [(str(p), float(s)) for p, s in zip(ranked, scores, strict=True)]
    qrels["q00"] = dict.fromkeys(qrels["q00"], 0)  # a query with no relevant product
    return run, qrels


def ir_measures_per_query(
    run: dict[str, list[tuple[str, float]]],
    qrels: dict[str, dict[str, int]],
    metric: str,
    *,
    judged_only: bool,
) -> np.ndarray:
    ir_measures = pytest.importorskip("ir_measures")
    name, k = parse_metric_name(metric)
    base = {
        "ndcg": ir_measures.nDCG,
        "recall": ir_measures.R,
        "precision": ir_measures.P,
        "mrr": ir_measures.RR,
        "map": ir_measures.AP,
    }[name]
    measure = base(cutoff=k, judged_only=True) if judged_only else base @ k
    qrel_rows = [
        ir_measures.Qrel(q, p, g) for q, judged in qrels.items() for p, g in judged.items()
    ]
    run_rows = [ir_measures.ScoredDoc(q, p, s) for q, ranked in run.items() for p, s in ranked]
    values = {
        row.query_id: row.value for row in ir_measures.iter_calc([measure], qrel_rows, run_rows)
    }
    return np.array([values[query_id] for query_id in sorted(qrels)])


@pytest.mark.parametrize("metric", CROSS_METRICS)
def test_matches_ir_measures_on_random_data(metric: str) -> None:
    run, qrels = random_benchmark()
    ours = evaluate_run(run, qrels, metrics=[metric], query_ids=sorted(qrels))[metric]
    theirs = ir_measures_per_query(run, qrels, metric, judged_only=False)
    assert ours.shape == (50,)
    assert ours.max() > 0  # the data exercise the metric
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


@pytest.mark.parametrize("metric", [m for m in CROSS_METRICS if not m.startswith("mrr")])
def test_judged_only_matches_ir_measures(metric: str) -> None:
    run, qrels = random_benchmark(seed=11)
    ours = evaluate_run(run, qrels, metrics=[metric], query_ids=sorted(qrels), judged_only=True)
    theirs = ir_measures_per_query(run, qrels, metric, judged_only=True)
    np.testing.assert_allclose(ours[metric], theirs, atol=1e-12)
    plain = evaluate_run(run, qrels, metrics=[metric], query_ids=sorted(qrels))[metric]
    assert not np.allclose(plain, ours[metric])  # the variant changes the numbers here


def test_judged_only_mrr_equals_mrr_of_the_filtered_run() -> None:
    # ir-measures' pytrec_eval RR has no cut-off with judged_only, so compare against RR@10 of
    # the run with unjudged products removed by hand.
    run, qrels = random_benchmark(seed=11)
    filtered = {q: [(p, s) for p, s in ranked if p in qrels[q]] for q, ranked in run.items()}
    ours = evaluate_run(run, qrels, metrics=["mrr@10"], query_ids=sorted(qrels), judged_only=True)
    theirs = ir_measures_per_query(filtered, qrels, "mrr@10", judged_only=False)
    np.testing.assert_allclose(ours["mrr@10"], theirs, atol=1e-12)


@pytest.mark.slow  # ranx compiles its numba kernels on first use (tens of seconds on 2 cores)
def test_matches_ranx_on_random_data() -> None:
    ranx = pytest.importorskip("ranx")
    run, qrels = random_benchmark()
    ours = evaluate_run(run, qrels, metrics=CROSS_METRICS, query_ids=sorted(qrels))
    ranx_qrels = ranx.Qrels.from_dict(qrels)
    ranx_run = ranx.Run.from_dict({q: dict(ranked) for q, ranked in run.items()})
    theirs = ranx.evaluate(ranx_qrels, ranx_run, CROSS_METRICS, return_mean=False)
    order = list(ranx_qrels.keys())
    assert sorted(order) == sorted(qrels)
    position = {query_id: index for index, query_id in enumerate(sorted(qrels))}
    for metric in CROSS_METRICS:
        aligned = ours[metric][[position[query_id] for query_id in order]]
        np.testing.assert_allclose(aligned, np.asarray(theirs[metric]), atol=1e-12)


# --- segments, coverage and concentration (shopaug.eval.segments) -------------------------
# Kept here because the segment measures are metrics too; move to tests/test_segments.py if
# that file is created.


def test_popularity_segments_by_count_of_products() -> None:
    popularity = {f"p{i}": float(100 - i) for i in range(10)}  # p0 most popular
    segments = popularity_segments(popularity)
    # 20 % of 10 products = 2 head products: p0 and p1.
    assert sorted(p for p, s in segments.items() if s == "head") == ["p0", "p1"]
    assert sum(s == "tail" for s in segments.values()) == 8
    # ceil(0.2 * 7) = ceil(1.4) = 2; ceil(0.1 * 30) = 3, not 4 from 3.0000000000000004.
    assert sum(s == "head" for s in popularity_segments(dict.fromkeys("abcdefg", 1)).values()) == 2
    thirty = {f"p{i:02d}": float(i) for i in range(30)}
    head = [p for p, s in popularity_segments(thirty, head_share=0.1).items() if s == "head"]
    assert sorted(head) == ["p27", "p28", "p29"]


def test_popularity_segments_ties_break_by_id_and_errors() -> None:
    segments = popularity_segments({"b": 5, "a": 5, "c": 5, "d": 0, "e": 0}, head_share=0.2)
    assert segments == {"a": "head", "b": "tail", "c": "tail", "d": "tail", "e": "tail"}
    with pytest.raises(ValueError, match="head_share must be in"):
        popularity_segments({"a": 1}, head_share=1.0)
    with pytest.raises(DataError, match="'a': popularity must be finite and >= 0"):
        popularity_segments({"a": -1})


def test_tail_share_coverage_and_gini_known_answers() -> None:
    segments = {"a": "head", "b": "tail", "c": "tail"}
    # a, b, b, c: 3 of 4 shown products are tail (repeats count).
    assert tail_share(["a", "b", "b", "c"], segments) == 0.75
    with pytest.raises(DataError, match="'z' has no segment"):
        tail_share(["a", "z"], segments)
    with pytest.raises(ValueError, match="empty"):
        tail_share([], segments)

    run = {"q1": [("a", 3.0), ("b", 2.0), ("c", 1.0)], "q2": [("a", 1.0), ("d", 0.5)]}
    # top 2: {a, b} and {a, d} -> 3 distinct products out of 10
    assert coverage(run, catalog_size=10, k=2) == pytest.approx(0.3)
    assert coverage(run, catalog_size=4, k=3) == 1.0  # a, b, c, d
    with pytest.raises(DataError, match="catalog_size is 3"):
        coverage(run, catalog_size=3, k=3)

    assert gini([5, 5, 5, 5]) == pytest.approx(0.0)
    # sorted 0, 0, 0, 1: 2 * (4 * 1) / (4 * 1) - 5/4 = 0.75 = (n - 1) / n, the maximum
    assert gini([0, 1, 0, 0]) == pytest.approx(0.75)
    # sorted 1, 2, 3: 2 * (1 + 4 + 9) / (3 * 6) - 4/3 = 28/18 - 24/18 = 2/9
    assert gini([3, 1, 2]) == pytest.approx(2 / 9)
    assert gini([0, 0]) == 0.0
    with pytest.raises(ValueError, match=">= 0"):
        gini([1, -1])


def test_mean_by_segment() -> None:
    means = mean_by_segment(np.array([1.0, 0.0, 0.5, 0.25]), ["head", "tail", "head", "tail"])
    assert means == {"head": 0.75, "tail": 0.125}
    with pytest.raises(ValueError, match="2 labels"):
        mean_by_segment([1.0], ["head", "tail"])


# --- the package's public API (shopaug.eval) -----------------------------------------------


def test_public_api_resolves_lazily() -> None:
    import shopaug.eval as evaluation

    assert sorted(evaluation.__all__) == sorted(evaluation._MODULE_OF)
    for name in evaluation.__all__:
        assert getattr(evaluation, name) is not None, name
    assert evaluation.ndcg_at_k is ndcg_at_k
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = evaluation.nope
    # Importing the package loads no metric module (and so neither numpy nor scipy).
    code = (
        "import sys, shopaug.eval; "
        "print(sorted(m for m in sys.modules if m.startswith(('scipy', 'shopaug.eval.'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
