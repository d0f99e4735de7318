"""benchmarks/recbole_rows.py: our split as RecBole's atomic file, SASRec's input sequences, and
(only where RecBole is installed) a tiny fit through RecBole on that file."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopaug.data.retail import validation_and_test
from shopaug.experiment.recommend_data import prepare_split

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load_module():
    spec = importlib.util.spec_from_file_location("recbole_rows", BENCHMARKS / "recbole_rows.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["recbole_rows"] = module
    spec.loader.exec_module(module)
    return module


recbole_rows = _load_module()


def retail_lines(seed: int = 0) -> pd.DataFrame:
    """40 customers, 4-6 invoices each between January and April 2011, 30 items; items 25-27
    first sell from mid March (new after a 2011-03-12 validation cut), 28-29 in April (new after
    a 2011-04-01 cut)."""
    rng = np.random.default_rng(seed)
    rows = []
    invoice = 5000
    for customer in range(40):
        days = np.sort(rng.choice(np.arange(1, 118), size=int(rng.integers(4, 7)), replace=False))
        for day in days:
            invoice += 1
            pool = list(range(25)) + [25, 26, 27] * int(day >= 75) + [28, 29] * int(day >= 90)
            when = pd.Timestamp("2011-01-01") + pd.Timedelta(days=int(day), hours=10)
            for item in sorted(rng.choice(pool, size=int(rng.integers(2, 5)), replace=False)):
                rows.append((str(invoice), str(100 + customer), f"I{item:02d}", 1, when))
    lines = pd.DataFrame(
        rows, columns=["invoice", "customer_id", "item_id", "quantity", "timestamp"]
    )
    return lines.sort_values(["timestamp", "invoice", "item_id"], kind="stable").reset_index(
        drop=True
    )


def read_atomic(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, sep="\t", dtype=str)
    frame["timestamp:float"] = frame["timestamp:float"].astype(float)
    return frame


def triples(lines: pd.DataFrame) -> set[tuple[str, str, float]]:
    seconds = (lines["timestamp"] - pd.Timestamp("1970-01-01")).dt.total_seconds()
    return set(zip(lines["customer_id"], lines["item_id"], seconds, strict=True))


@pytest.fixture
def splits():
    return validation_and_test(retail_lines(), "2011-04-01", validation_days=20)


def test_atomic_file_holds_exactly_the_training_lines(splits, tmp_path: Path) -> None:
    for split in (splits.validation, splits.test):
        path = recbole_rows.write_atomic_file(split.train, tmp_path / str(split.cut.date()))
        assert path.name == "retail.inter"
        frame = read_atomic(path)
        assert list(frame.columns) == ["user_id:token", "item_id:token", "timestamp:float"]
        cut_seconds = (split.cut - pd.Timestamp("1970-01-01")).total_seconds()
        assert frame["timestamp:float"].max() < cut_seconds  # nothing from the cut on
        written = list(zip(frame["user_id:token"], frame["item_id:token"], strict=True))
        expected = list(zip(split.train["customer_id"], split.train["item_id"], strict=True))
        assert written == expected  # every training line, in time order
        # no line from the cut on (validation or test baskets, later invoices) is in the file
        lines = retail_lines()
        after = lines.loc[lines["timestamp"] >= split.cut]
        assert len(after) > 0
        assert not triples(after) & set(
            zip(frame["user_id:token"], frame["item_id:token"], frame["timestamp:float"])
        )
        assert split.new_items and not set(frame["item_id:token"]) & set(split.new_items)
    validation_file = read_atomic(
        tmp_path / str(splits.validation.cut.date()) / "retail" / "retail.inter"
    )
    assert len(validation_file) < len(splits.test.train)  # the validation cut is earlier


def test_atomic_file_refuses_bad_lines(splits, tmp_path: Path) -> None:
    train = splits.test.train
    with pytest.raises(ValueError, match="customer_id"):
        recbole_rows.write_atomic_file(train.drop(columns=["customer_id"]), tmp_path)
    with pytest.raises(ValueError, match="datetime64"):
        recbole_rows.write_atomic_file(train.assign(timestamp="2011-01-01"), tmp_path)
    tabbed = train.assign(item_id=train["item_id"].where(train.index != 3, "I\t03"))
    with pytest.raises(ValueError, match="tab or line break"):
        recbole_rows.write_atomic_file(tabbed, tmp_path)


def test_sequence_batch_keeps_the_last_purchases_in_order() -> None:
    ids, lengths = recbole_rows.sequence_batch(
        [["a", "b", "c", "d"], ["c"]], {"a": 1, "b": 2, "c": 3, "d": 4}, max_length=3
    )
    assert ids.tolist() == [[2, 3, 4], [3, 0, 0]]
    assert lengths.tolist() == [3, 1]
    with pytest.raises(ValueError, match="does not know"):
        recbole_rows.sequence_batch([["a", "z"]], {"a": 1}, max_length=3)
    with pytest.raises(ValueError, match="empty"):
        recbole_rows.sequence_batch([[]], {"a": 1}, max_length=3)


def test_normalized_adjacency_matches_hand_computed_values() -> None:
    pytest.importorskip("torch")
    from scipy.sparse import coo_matrix

    # users 1 and 2 (0 is RecBole's padding), items 1 and 2; user 1 bought item 1 twice
    counts = coo_matrix(([1.0, 1.0, 1.0, 1.0], ([1, 1, 1, 2], [1, 1, 2, 1])), shape=(3, 3))
    graph = recbole_rows.normalized_adjacency(counts, 3, 3).to_dense().numpy()
    expected = np.zeros((6, 6), dtype=np.float32)
    # degrees: user 1 -> 2, user 2 -> 1, item 1 (node 4) -> 2, item 2 (node 5) -> 1
    for user, item, value in [(1, 4, 1 / 2), (1, 5, 1 / np.sqrt(2)), (2, 4, 1 / np.sqrt(2))]:
        expected[user, item] = expected[item, user] = value
    np.testing.assert_allclose(graph, expected, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["bpr", "lightgcn", "sasrec"])
def test_recbole_fit_ranks_only_items_sold_before_the_cut(key: str, splits, tmp_path: Path) -> None:
    pytest.importorskip(
        "recbole",
        reason="RecBole is a benchmark-only install (benchmarks/requirements-recbole.txt)",
    )
    recbole_rows.import_recbole()
    catalog = tuple(sorted(set(retail_lines()["item_id"])))
    test = prepare_split(splits.test, eval_customers=None, seed=0, catalog=catalog)
    valid = prepare_split(splits.validation, eval_customers=None, seed=0, catalog=test.catalog)
    row = recbole_rows.ROWS[key]
    small = recbole_rows.RecBoleRow(
        row.name,
        row.model,
        max_epochs=3,
        patience=1,
        settings={**row.settings, "train_batch_size": 64},
    )
    fitted = recbole_rows.fit_row(small, valid, test, tmp_path, seed=0, k=5, depth=10)
    assert 1 <= fitted.info["best_epoch"] <= fitted.info["epochs_run"] <= 3
    sold_before = set(splits.test.train["item_id"])
    assert fitted.info["items"] == len(sold_before)  # RecBole saw the training lines only
    assert set(fitted.runs["test"]) == set(test.customers)
    assert set(fitted.runs["validation"]) == set(valid.customers)
    for ranked in fitted.runs["test"].values():
        assert len(ranked) == 10 and len(set(ranked)) == 10
        assert set(ranked) <= sold_before
    valid_sold = set(splits.validation.train["item_id"])
    assert all(set(r) <= valid_sold for r in fitted.runs["validation"].values())
