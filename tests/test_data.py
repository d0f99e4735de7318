"""Loaders, validation errors, the demo generator and query-level folds."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from shopaug.data import (
    check_fold_index,
    kfold_queries,
    load_dataset,
    select_fold,
    validation_split,
)
from shopaug.data.demo import DEMO_SEED, generate_demo
from shopaug.data.loaders import load_wands, load_wands_subset
from shopaug.errors import ConfigError, DataError


def test_wands_loader_reads_products_queries_labels(wands_dir: Path) -> None:
    dataset = load_wands(wands_dir)
    assert [p.id for p in dataset.products] == ["0", "1", "2", "3", "4"]
    sofa = dataset.product("0")
    assert sofa.category == ("Furniture", "Living Room", "Sofas")
    assert sofa.attributes == {"color": "blue", "material": "velvet"}
    assert dataset.qrels()["0"] == {"0": 2, "1": 1, "2": 0}
    assert dataset.positives()["1"] == {"2"}


def test_wands_checksum_mismatch_is_reported(wands_dir: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        load_wands(wands_dir)
    assert "checksum differs" in caplog.text
    with pytest.raises(DataError, match="checksum differs"):
        load_wands(wands_dir, strict_checksums=True)


def test_missing_product_csv_says_where_to_get_it(wands_dir: Path) -> None:
    (wands_dir / "wands" / "product.csv").unlink()
    with pytest.raises(DataError) as error:
        load_wands(wands_dir)
    message = str(error.value)
    assert "github.com/wayfair/WANDS" in message
    assert "dataset/product.csv" in message
    assert str(wands_dir / "wands" / "product.csv") in message


def test_product_csv_from_explicit_path(wands_dir: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere.csv"
    (wands_dir / "wands" / "product.csv").rename(moved)
    assert len(load_wands(wands_dir, products_path=moved).products) == 5


def test_wands_subset_keeps_products_in_subset_and_queries_with_a_relevant_one(
    wands_dir: Path,
) -> None:
    dataset = load_wands_subset(wands_dir)
    assert dataset.name == "wands-subset"
    assert {p.id for p in dataset.products} == {"0", "1", "2"}
    # query 2 ("lamp") has only product 3, outside the subset: dropped.
    assert [q.id for q in dataset.queries] == ["0", "1"]
    assert all(j.product_id in {"0", "1", "2"} for j in dataset.judgments)


def test_missing_column_names_file_and_columns(wands_dir: Path) -> None:
    path = wands_dir / "wands" / "label.csv"
    path.write_text("id\tquery_id\tproduct\tgrade\n0\t0\t0\tExact\n", "utf-8")
    with pytest.raises(DataError) as error:
        load_wands(wands_dir)
    assert "label.csv" in str(error.value)
    assert "product_id" in str(error.value) and "found id, query_id, product, grade" in str(
        error.value
    )


def test_unknown_label_names_line(wands_dir: Path) -> None:
    path = wands_dir / "wands" / "label.csv"
    path.write_text(path.read_text() + "6\t0\t3\tMaybe\n", "utf-8")
    with pytest.raises(DataError, match=r"label\.csv, line 8, column 'label': unknown label"):
        load_wands(wands_dir)


def test_bad_encoding_names_line(generic_dir: Path) -> None:
    path = generic_dir / "queries.csv"
    path.write_bytes(b"query_id,query\nq1,navy shirt\nq2,b\xe9lt\n")
    with pytest.raises(DataError, match=r"queries\.csv, line 3: is not valid UTF-8"):
        load_dataset(str(generic_dir))


def test_generic_folder_loads_every_table(generic_dir: Path) -> None:
    dataset = load_dataset(str(generic_dir))
    assert dataset.name == "shop"
    assert dataset.product("a1").attributes == {"color": "navy"}
    assert dataset.product("a1").category == ("Clothing", "Shirts")
    assert dataset.qrels() == {"q1": {"a1": 2, "a2": 1, "a3": 0}, "q2": {"a3": 2}}
    assert [i.event for i in dataset.interactions] == ["click", "purchase"]
    assert dataset.interactions[0].position == 1


@pytest.mark.parametrize(
    ("table", "content", "expected"),
    [
        (
            "products.csv",
            "product_id,title\na1,Shirt\na1,Other\n",
            r"products\.csv, line 3, column 'product_id': duplicate product id 'a1'",
        ),
        ("products.csv", "product_id,title\na1,\n", r"line 2, column 'title': empty product title"),
        ("queries.csv", "query_id,query\nq1,navy shirt\nq2,  \n", r"line 3.*empty query text"),
        (
            "judgments.csv",
            "query_id,product_id,grade\nq1,zz,2\n",
            r"judgments\.csv, line 2, column 'product_id': unknown product_id 'zz'",
        ),
        ("judgments.csv", "query_id,product_id,grade\nq9,a1,2\n", r"unknown query_id 'q9'"),
        ("judgments.csv", "query_id,product_id,grade\nq1,a1,high\n", r"grade 'high' is not"),
        ("interactions.csv", "user_id,product_id,event\nu1,a1,like\n", r"unknown event 'like'"),
    ],
)
def test_bad_rows_are_errors_with_file_and_line(
    generic_dir: Path, table: str, content: str, expected: str
) -> None:
    (generic_dir / table).write_text(content, "utf-8")
    if table == "products.csv":  # keep judgments consistent with the new products
        (generic_dir / "judgments.csv").write_text("query_id,product_id,grade\n", "utf-8")
    with pytest.raises(DataError, match=expected):
        load_dataset(str(generic_dir))


def test_skip_bad_rows_counts_instead_of_failing(generic_dir: Path) -> None:
    (generic_dir / "judgments.csv").write_text(
        "query_id,product_id,grade\nq1,a1,2\nq1,zz,1\nq1,yy,1\n", "utf-8"
    )
    dataset = load_dataset(str(generic_dir), skip_bad_rows=True)
    assert len(dataset.judgments) == 1
    assert sum(dataset.skipped.values()) == 2
    assert dataset.summary()["skipped_rows"] == dataset.skipped


def test_missing_table_and_missing_folder(generic_dir: Path, tmp_path: Path) -> None:
    (generic_dir / "queries.csv").unlink()
    with pytest.raises(DataError, match="missing table 'queries'"):
        load_dataset(str(generic_dir))
    with pytest.raises(DataError, match="not a folder and not a known data set"):
        load_dataset(str(tmp_path / "nope"))


def test_parquet_and_jsonl_tables(generic_dir: Path) -> None:
    import pandas as pd

    frame = pd.read_csv(generic_dir / "products.csv", dtype=str, keep_default_na=False)
    frame.to_parquet(generic_dir / "products.parquet")
    (generic_dir / "products.csv").unlink()
    pd.read_csv(generic_dir / "queries.csv", dtype=str).to_json(
        generic_dir / "queries.jsonl", orient="records", lines=True
    )
    (generic_dir / "queries.csv").unlink()
    dataset = load_dataset(str(generic_dir))
    assert len(dataset.products) == 3 and len(dataset.queries) == 2


def test_demo_is_deterministic_and_graded_by_attributes() -> None:
    first, second = generate_demo(seed=3), generate_demo(seed=3)
    assert first.products == second.products and first.judgments == second.judgments
    assert generate_demo(seed=4).products != first.products
    assert len(first.products) >= 300 and len(first.queries) >= 50
    by_id = {p.id: p for p in first.products}
    for query in first.queries:
        exact = [j for j in first.judgments if j.query_id == query.id and j.label == "Exact"]
        assert exact, f"query {query.text!r} has no Exact product"
        for judgment in exact:  # every attribute the query names is the product's
            product = by_id[judgment.product_id]
            values = set(product.attributes.values())
            words = query.text.replace(query.query_class, "").split()
            assert all(word in values for word in words), (query.text, product)
            assert query.query_class in product.title


def test_demo_data_does_not_depend_on_the_run_seed() -> None:
    first, other = load_dataset("demo", seed=0), load_dataset("demo", seed=3)
    assert first.products == other.products and first.queries == other.queries
    assert first.judgments == other.judgments and first.interactions == other.interactions
    assert first.name == "demo" and first.products == generate_demo(seed=DEMO_SEED).products
    reseeded = load_dataset("demo", demo_seed=DEMO_SEED + 1)
    assert reseeded.name == f"demo-seed{DEMO_SEED + 1}" and reseeded.products != first.products


def test_select_fold_checks_the_range() -> None:
    ids = [f"q{i}" for i in range(23)]
    folds = kfold_queries(ids, n_folds=5, seed=1)
    assert select_fold(ids, 4, n_folds=5, seed=1) == folds[4]
    assert select_fold(ids, 0, n_folds=5, seed=1) == folds[0]
    for bad in (5, 9, -1):
        with pytest.raises(ConfigError, match=rf"--fold must be in 0\.\.4 .*got {bad}"):
            select_fold(ids, bad, n_folds=5, seed=1, name="--fold")
    with pytest.raises(ConfigError, match=r"fold must be in 0\.\.2 \(0-based, 3 folds\), got 3"):
        check_fold_index(3, n_folds=3)
    assert check_fold_index(2, n_folds=3) == 2


def test_kfold_is_seeded_disjoint_and_complete() -> None:
    ids = [f"q{i}" for i in range(23)]
    folds = kfold_queries(ids, n_folds=5, seed=1)
    assert folds == kfold_queries(list(reversed(ids)), n_folds=5, seed=1)
    assert folds != kfold_queries(ids, n_folds=5, seed=2)
    tests = [set(f.test) for f in folds]
    assert set().union(*tests) == set(ids)
    assert sum(len(t) for t in tests) == len(ids)
    for fold in folds:
        assert not set(fold.train) & set(fold.test)
        assert len(fold.test) in (4, 5)
    with pytest.raises(ConfigError):
        kfold_queries(ids[:3], n_folds=5)


def test_validation_split_is_carved_from_train() -> None:
    train, valid = validation_split([f"q{i}" for i in range(20)], fraction=0.2, seed=0)
    assert len(valid) == 4 and not set(train) & set(valid)
    assert (train, valid) == validation_split([f"q{i}" for i in range(20)], fraction=0.2, seed=0)
