"""Hard-negative mining, baselines, determinism, the false-negative filter and the audit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopaug.augment.audit import audit_samples
from shopaug.augment.mining import (
    MiningConfig,
    mine_hard_negatives,
    sample_baseline_negatives,
    visible_qrels,
)
from shopaug.augment.pipeline import augment
from shopaug.augment.samples import SAMPLE_COLUMNS, read_samples, write_samples
from shopaug.data import kfold_queries
from shopaug.data.demo import generate_demo
from shopaug.data.records import Dataset, Judgment, Product, Query
from shopaug.errors import ConfigError


@pytest.fixture(scope="module")
def demo() -> Dataset:
    return generate_demo(seed=0, n_products=200, n_queries=30)


def _mine(dataset: Dataset, method: str, **overrides) -> pd.DataFrame:
    config = MiningConfig(method=method, model="hashing", show_progress=False, **overrides)
    run = (
        mine_hard_negatives if method in ("bm25", "dense", "hybrid") else sample_baseline_negatives
    )
    return run(dataset, [q.id for q in dataset.queries], config)[0]


@pytest.mark.parametrize("method", ["random", "popular", "bm25", "dense", "hybrid"])
def test_no_known_positive_is_ever_a_negative(demo: Dataset, method: str) -> None:
    frame = _mine(demo, method)
    relevant = demo.positives()
    negatives = frame[frame["kind"] == "negative"]
    assert len(negatives) > 0
    assert list(frame.columns) == list(SAMPLE_COLUMNS)
    for qid, pid in zip(negatives["query_id"], negatives["product_id"]):
        assert pid not in relevant[qid]
    assert not frame.duplicated(["query_id", "product_id", "kind"]).any()
    assert set(negatives["method"]) == {method}


@pytest.mark.parametrize("method", ["random", "popular", "bm25", "dense"])
def test_same_seed_gives_byte_identical_parquet(demo: Dataset, method: str, tmp_path: Path) -> None:
    first = write_samples(_mine(demo, method, sampling="random", seed=3), tmp_path / "a.parquet")
    second = write_samples(_mine(demo, method, sampling="random", seed=3), tmp_path / "b.parquet")
    assert first.read_bytes() == second.read_bytes()
    other = _mine(demo, method, sampling="random", seed=4)
    if method in ("random", "popular"):
        assert not read_samples(first).equals(other)


def test_rank_window_and_top_sampling(demo: Dataset) -> None:
    frame = _mine(demo, "bm25", range_min=3, range_max=20, margin=0.0, negatives_per_query=4)
    negatives = frame[frame["kind"] == "negative"]
    assert negatives["rank"].between(4, 20).all()
    for _, group in negatives.groupby("query_id"):
        ranks = group["rank"].tolist()
        assert ranks == sorted(ranks) and len(ranks) <= 4


def test_margin_drops_candidates_scoring_close_to_the_positive() -> None:
    products = [
        Product("p0", "red wool rug"),
        Product("p1", "red wool rug large"),  # hashing cosine 0.88 to the positive: in margin
        Product("p2", "blue cotton pillow"),
        Product("p3", "green glass lamp"),
    ]
    dataset = Dataset(
        name="tiny",
        products=products,
        queries=[Query("q", "red wool rug")],
        judgments=[Judgment("q", "p0", "2")],
        gains={"2": 2, "0": 0},
    )
    # relative margin 0.2: negatives must score below 1.0 * (1 - 0.2) = 0.8
    config = MiningConfig(
        method="dense", model="hashing", show_progress=False, margin=0.2, negatives_per_query=3
    )
    frame, stats = mine_hard_negatives(dataset, ["q"], config)
    negatives = set(frame.loc[frame["kind"] == "negative", "product_id"])
    assert negatives == {"p2", "p3"} and stats.filtered_false_negatives == 1
    unfiltered, _ = mine_hard_negatives(
        dataset,
        ["q"],
        MiningConfig(
            method="dense", model="hashing", show_progress=False, margin=0.0, negatives_per_query=3
        ),
    )
    assert "p1" in set(unfiltered.loc[unfiltered["kind"] == "negative", "product_id"])


def test_cross_encoder_filter_drops_what_it_judges_relevant(demo: Dataset) -> None:
    def judge(pairs):  # a fake cross-encoder: says "relevant" for every product with "a" in text
        return np.array([1.0 if " a" in text else 0.0 for _, text in pairs])

    config = MiningConfig(method="bm25", show_progress=False, margin=0.0)
    frame, stats = mine_hard_negatives(
        demo, [q.id for q in demo.queries], config, cross_encoder=judge
    )
    texts = {p.id: p.render() for p in demo.products}
    negatives = frame[frame["kind"] == "negative"]
    assert all(" a" not in texts[p] for p in negatives["product_id"])
    assert stats.filtered_by_cross_encoder > 0


def test_label_fraction_hides_labels_and_audit_finds_false_negatives(demo: Dataset) -> None:
    ids = [q.id for q in demo.queries]
    visible = visible_qrels(demo, ids, 0.3, seed=0)
    full = demo.qrels()
    for qid in ids:
        assert set(visible[qid]) <= set(full[qid])
        assert sum(g > 0 for g in visible[qid].values()) >= 1
    frame = _mine(demo, "bm25", label_fraction=0.3, margin=0.0)
    report = audit_samples(frame, demo).payload
    assert report["false_negative_rate"] > 0  # hidden positives came back as negatives
    negatives = frame[frame["kind"] == "negative"]
    false = sum(
        full[q].get(p, 0) > 0 for q, p in zip(negatives["query_id"], negatives["product_id"])
    )
    judged = sum(p in full[q] for q, p in zip(negatives["query_id"], negatives["product_id"]))
    assert report["false_negative_rate"] == pytest.approx(false / judged)


def test_audit_counts_duplicates_conflicts_and_leakage(demo: Dataset) -> None:
    folds = kfold_queries([q.id for q in demo.queries], n_folds=3, seed=0)
    frame = _mine(demo.subset(folds[0].train), "random")
    clean = audit_samples(frame, demo, test_query_ids=folds[0].test).payload
    assert clean["leakage"]["rows_with_test_query_id"] == 0 and clean["duplicates"] == 0
    test_qid = folds[0].test[0]
    leaked_row = frame.iloc[[0]].assign(
        query_id=test_qid, query=demo.query_by_id[test_qid].text, kind="negative"
    )
    dirty = pd.concat([frame, frame.iloc[[0]], leaked_row], ignore_index=True)
    report = audit_samples(dirty, demo, test_query_ids=folds[0].test).payload
    assert report["duplicates"] == 1
    assert report["leakage"]["rows_with_test_query_id"] == 1
    assert report["leakage"]["rows_with_test_query_text"] >= 1
    assert test_qid in report["leakage"]["leaked_queries"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"range_min": 10, "range_max": 5}, "range_max"),
        ({"margin": -1}, "margin"),
        ({"sampling": "best"}, "sampling"),
        ({"negatives_per_query": 0}, "negatives_per_query"),
        ({"label_fraction": 0}, "label_fraction"),
    ],
)
def test_bad_config_is_a_clear_error(demo: Dataset, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _mine(demo, "bm25", **overrides)


def test_unknown_config_key_and_method(demo: Dataset) -> None:
    from shopaug.augment.pipeline import AugmentConfig

    with pytest.raises(ConfigError, match=r"unknown key.*range_maxx"):
        augment(demo, "bm25", ["q000"], config=AugmentConfig(mining={"range_maxx": 3}))
    with pytest.raises(ConfigError, match="unknown method"):
        augment(demo, "bm26", ["q000"])


def _with_planted_test_query(dataset: Dataset, product_ids: list[str]) -> Dataset:
    """``dataset`` plus one query, judged Exact on ``product_ids``, that no training sees."""
    from dataclasses import replace

    planted = Query(id="q_planted_test", text="planted test query")
    judgments = [Judgment(planted.id, pid, "Exact") for pid in product_ids]
    return replace(
        dataset, queries=[*dataset.queries, planted], judgments=[*dataset.judgments, *judgments]
    )


def test_popularity_is_counted_on_the_training_queries_only(demo: Dataset) -> None:
    from dataclasses import replace

    from shopaug.augment.mining import popularity_counts

    demo = replace(demo, interactions=[])  # popularity from judgments, as on WANDS
    train = [q.id for q in demo.queries]
    never_relevant = sorted(
        {p.id for p in demo.products} - {p for ps in demo.positives().values() for p in ps}
    )[:20]
    planted = _with_planted_test_query(demo, never_relevant)
    counts, origin = popularity_counts(demo, query_ids=train)
    planted_counts, planted_origin = popularity_counts(planted, query_ids=train)
    assert origin == planted_origin == "judgments"
    np.testing.assert_array_equal(planted_counts, counts)
    # Counted over the whole data set, the planted test judgments would show.
    leaked, _ = popularity_counts(planted, query_ids=None)
    rows = [planted.product_index[p] for p in never_relevant]
    assert (leaked[rows] == 1).all() and (counts[rows] == 0).all()

    config = MiningConfig(method="popular", popularity_alpha=1.0, show_progress=False)
    frame, _ = sample_baseline_negatives(demo, train, config)
    planted_frame, _ = sample_baseline_negatives(planted, train, config)
    pd.testing.assert_frame_equal(planted_frame, frame)


def test_popularity_counts_training_interactions_and_unattributed_ones() -> None:
    from shopaug.augment.mining import popularity_counts
    from shopaug.data.records import Interaction

    products = [Product(id=f"p{i}", title=f"item {i}") for i in range(3)]
    dataset = Dataset(
        name="log",
        products=products,
        queries=[Query(id="train", text="a"), Query(id="test", text="b")],
        judgments=[],
        gains={"1": 1},
        interactions=[
            Interaction(user_id="u", product_id="p0", event="click", query_id="train"),
            Interaction(user_id="u", product_id="p1", event="click", query_id="test"),
            Interaction(user_id="u", product_id="p2", event="purchase"),  # no query: counts
            Interaction(user_id="u", product_id="p2", event="impression", query_id="train"),
        ],
    )
    counts, origin = popularity_counts(dataset, query_ids=["train"])
    assert origin == "interactions"
    assert counts.tolist() == [1.0, 0.0, 1.0]
    assert popularity_counts(dataset, query_ids=None)[0].tolist() == [1.0, 1.0, 1.0]
