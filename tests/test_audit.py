"""The sample audit: Exact and Exact-or-Partial false negatives counted apart, tail share, rows."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from shopaug.augment.audit import PER_METHOD_KEYS, audit_samples, head_products
from shopaug.data.loaders import WANDS_GAINS
from shopaug.data.records import Dataset, Judgment, Product, Query
from shopaug.eval.segments import popularity_segments


def _dataset() -> Dataset:
    # Seven products; p0 and p1 are the most judged-relevant, so with head_share 0.2 the head is
    # ceil(0.2 * 7) = 2 products (p0, p1), as eval.segments splits it (rounding would give 1).
    products = [Product(id=f"p{i}", title=f"item {i}") for i in range(7)]
    queries = [Query(id=f"q{i}", text=f"query {i}") for i in range(3)]
    judgments = [
        Judgment("q0", "p0", "Exact"),
        Judgment("q0", "p1", "Partial"),
        Judgment("q0", "p2", "Irrelevant"),
        Judgment("q1", "p0", "Exact"),
        Judgment("q1", "p1", "Exact"),
        Judgment("q1", "p3", "Partial"),
        Judgment("q2", "p0", "Partial"),
        Judgment("q2", "p1", "Partial"),
    ]
    return Dataset(
        name="tiny",
        products=products,
        queries=queries,
        judgments=judgments,
        gains=dict(WANDS_GAINS),
    )


def _row(query_id: str, product_id: str, kind: str, method: str, rank: int = -1) -> dict:
    return {
        "query_id": query_id,
        "query": f"query {query_id[1:]}",
        "product_id": product_id,
        "label": int(kind == "positive"),
        "kind": kind,
        "method": method,
        "source": "test",
        "seed": 0,
        "score": 0.0,
        "rank": rank,
    }


def _samples() -> pd.DataFrame:
    rows = [
        _row("q0", "p0", "positive", "dense"),
        # dense: Exact, Partial, Irrelevant, unjudged
        _row("q1", "p0", "negative", "dense", 1),  # Exact (head)
        _row("q0", "p1", "negative", "dense", 2),  # Partial (head)
        _row("q0", "p2", "negative", "dense", 12),  # Irrelevant (tail)
        _row("q0", "p5", "negative", "dense", 40),  # unjudged (tail)
        # random: one Partial, one unjudged
        _row("q1", "p3", "negative", "random"),  # Partial (tail)
        _row("q2", "p6", "negative", "random"),  # unjudged (tail)
    ]
    return pd.DataFrame(rows)


def test_head_products_use_the_segments_split() -> None:
    dataset = _dataset()
    head, origin = head_products(dataset)
    assert origin == "judgments"
    assert head == {"p0", "p1"}
    popularity = {"p0": 3.0, "p1": 3.0, "p3": 1.0, "p2": 0.0, "p4": 0.0, "p5": 0.0, "p6": 0.0}
    segments = popularity_segments(popularity, head_share=0.2)
    assert head == {pid for pid, segment in segments.items() if segment == "head"}


def test_exact_and_exact_or_partial_false_negatives_are_counted_apart() -> None:
    report = audit_samples(_samples(), _dataset())
    rows = {row["method"]: row for row in report.per_method}
    assert [row["method"] for row in report.per_method] == ["dense", "random"]
    assert all(tuple(row) == PER_METHOD_KEYS for row in report.per_method)
    assert rows["dense"] == {
        "method": "dense",
        "negatives": 4,
        "judged": 3,
        "unjudged": 1,
        "exact": 1,
        "exact_or_partial": 2,
        "fn_rate_exact": pytest.approx(1 / 3),
        "fn_rate_exact_or_partial": pytest.approx(2 / 3),
        "tail": 2,
        "tail_share": pytest.approx(0.5),
    }
    assert rows["random"]["exact"] == 0 and rows["random"]["exact_or_partial"] == 1
    assert rows["random"]["fn_rate_exact"] == 0.0
    assert rows["random"]["fn_rate_exact_or_partial"] == 1.0
    assert rows["random"]["tail_share"] == 1.0

    payload = report.payload
    assert payload["per_method"] == report.per_method
    assert payload["exact"] == 1 and payload["exact_or_partial"] == 3 and payload["judged"] == 4
    assert payload["fn_rate_exact"] == pytest.approx(0.25)
    assert payload["false_negative_rate"] == payload["fn_rate_exact_or_partial"] == 0.75
    assert payload["by_rank_band"]["dense"]["1-10"]["exact"] == 1
    assert payload["by_rank_band"]["dense"]["11-30"]["fn_rate_exact_or_partial"] == 0.0
    json.dumps(payload)  # metrics.json-ready: plain Python types only


def test_a_method_without_judged_negatives_has_no_rate() -> None:
    samples = pd.DataFrame([_row("q0", "p5", "negative", "synthetic")])
    (row,) = audit_samples(samples, _dataset()).per_method
    assert row["judged"] == 0 and row["fn_rate_exact"] is None
    assert row["fn_rate_exact_or_partial"] is None and row["tail_share"] == 1.0


def test_table_shows_the_exact_or_partial_rate() -> None:
    table = audit_samples(_samples(), _dataset()).table()
    assert table == [("dense", "4", "3", "0.667", "0.500"), ("random", "2", "1", "1.000", "1.000")]
