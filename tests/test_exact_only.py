"""The Exact-only variant is scored over the queries that have an Exact product, and only those."""

from __future__ import annotations

import pytest

from shopaug.data.loaders import WANDS_GAINS
from shopaug.data.records import Dataset, Judgment, Product, Query
from shopaug.data.splits import Fold
from shopaug.eval.metrics import queries_with_relevant
from shopaug.eval.pipeline import evaluate_folds
from shopaug.eval.runner import exact_only_qrels


def _dataset() -> Dataset:
    products = [Product(id=f"p{i}", title=f"product {i}") for i in range(4)]
    queries = [Query(id="q_exact", text="sofa"), Query(id="q_partial", text="lamp")]
    judgments = [
        Judgment("q_exact", "p0", "Exact"),
        Judgment("q_exact", "p1", "Partial"),
        Judgment("q_partial", "p2", "Partial"),  # no Exact product: scores 0 by construction
        Judgment("q_partial", "p3", "Irrelevant"),
    ]
    return Dataset(
        name="tiny", products=products, queries=queries, judgments=judgments, gains=WANDS_GAINS
    )


def test_queries_with_relevant_keeps_queries_with_a_positive_gain() -> None:
    qrels = {"a": {"p1": 0, "p2": 1}, "b": {"p1": 0}, "c": {}}
    assert queries_with_relevant(qrels) == {"a": {"p1": 0, "p2": 1}}


def test_exact_only_qrels_skips_a_query_without_an_exact_product() -> None:
    qrels = exact_only_qrels(_dataset())
    assert qrels == {"q_exact": {"p0": 1, "p1": 0}}


def test_exact_only_ndcg_is_the_mean_over_queries_with_an_exact_product() -> None:
    dataset = _dataset()
    run = {
        "q_exact": [("p0", 2.0), ("p1", 1.0)],  # Exact product first: NDCG 1
        "q_partial": [("p2", 2.0)],
    }
    folds = [Fold(index=0, train=(), test=("q_exact", "q_partial"))]
    scored = evaluate_folds(run, exact_only_qrels(dataset), folds, metrics=["ndcg@10"])
    assert scored.per_query["ndcg@10"] == {"q_exact": 1.0}
    assert scored.summary["ndcg@10"]["mean"] == pytest.approx(1.0)
    # Scoring every query would have halved it.
    everything = dataset.qrels(gains={"Exact": 1})
    halved = evaluate_folds(run, everything, folds, metrics=["ndcg@10"])
    assert halved.summary["ndcg@10"]["mean"] == pytest.approx(0.5)
