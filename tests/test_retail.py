"""The Online Retail loader: cleaning rules with counts, titles, bad input, and the time split."""

from __future__ import annotations

import lzma
from pathlib import Path

import pandas as pd
import pytest

from shopaug.data.retail import (
    load_retail,
    subsample_customers,
    time_split,
    validation_and_test,
)
from shopaug.errors import DataError

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
ROWS = [
    # customer 1: two invoices before the cut, one after
    "1001,A1,RED MUG,2,2011-01-03 10:00:00,1.5,1.0,UK",
    "1001,B2,BLUE MUG,1,2011-01-03 10:00:00,1.5,1.0,UK",
    "1001,A1,RED MUG,1,2011-01-03 10:00:00,1.5,1.0,UK",  # same item again: merged, qty 3
    "1002,A1,red mug large,1,2011-02-03 10:00:00,1.5,1.0,UK",
    "1003,C3,GREEN JUG,1,2011-03-05 09:00:00,2.0,1.0,UK",  # test basket of 1
    "1003,N9,NEW LAMP,1,2011-03-05 09:00:00,9.0,1.0,UK",  # new item (first sold after cut)
    "1004,B2,BLUE MUG,1,2011-03-20 09:00:00,1.5,1.0,UK",  # later invoice: not the test basket
    # customer 2: one invoice before the cut
    "2001,B2,BLUE MUG,4,2011-01-10 10:00:00,1.5,2.0,UK",
    "2001,C3,GREEN JUG,1,2011-01-10 10:00:00,2.0,2.0,UK",
    "2002,A1,RED MUG,1,2011-03-02 10:00:00,1.5,2.0,UK",  # test basket of 2
    # customer 3: only after the cut (no history: not evaluated)
    "3001,A1,RED MUG,1,2011-03-03 10:00:00,1.5,3.0,UK",
    # noise, one row per rule
    "C1005,A1,RED MUG,-1,2011-01-04 10:00:00,1.5,1.0,UK",  # cancellation
    "A1006,B,Adjust bad debt,1,2011-01-04 10:00:00,-11062.06,,UK",  # adjustment
    "1007,POST,POSTAGE,1,2011-01-04 10:00:00,18.0,1.0,UK",  # non-product code
    "1008,gift_0001_10,Dotcomgiftshop Gift Voucher,1,2011-01-04 10:00:00,8.5,1.0,UK",
    "1009,A1,RED MUG,1,2011-01-04 10:00:00,1.5,,UK",  # missing customer
    "1010,C3,damaged,-3,2011-01-04 10:00:00,2.0,2.0,UK",  # return without C prefix
    "1011,C3,?,1,2011-01-04 10:00:00,0.0,2.0,UK",  # zero price
]


def write_csv(folder: Path, rows: list[str], header: str = HEADER, *, xz: bool = True) -> Path:
    target = folder / "online-retail"
    target.mkdir(parents=True, exist_ok=True)
    text = "\n".join([header, *rows]) + "\n"
    if xz:
        path = target / "online_retail.csv.xz"
        path.write_bytes(lzma.compress(text.encode()))
    else:
        path = target / "online_retail.csv"
        path.write_text(text)
    return path


@pytest.fixture
def retail_root(tmp_path: Path) -> Path:
    write_csv(tmp_path, ROWS)
    return tmp_path


def test_each_cleaning_rule_is_counted(retail_root: Path) -> None:
    data = load_retail(retail_root)
    assert data.cleaning == {
        "rows_read": 18,
        "malformed": 0,
        "cancellation": 1,
        "adjustment": 1,
        "non_product_code": 2,
        "missing_customer": 1,
        "non_positive_quantity": 1,
        "non_positive_price": 1,
        "no_description": 0,
        "rows_kept": 11,
        "lines": 10,
    }
    assert set(data.lines["customer_id"]) == {"1", "2", "3"}  # "1.0" -> "1"
    merged = data.lines.loc[(data.lines["invoice"] == "1001") & (data.lines["item_id"] == "A1")]
    assert merged["quantity"].tolist() == [3]
    assert data.lines["timestamp"].is_monotonic_increasing


def test_title_is_the_most_frequent_description_before_the_cut(retail_root: Path) -> None:
    titles = load_retail(retail_root).titles
    assert titles["A1"] == "RED MUG"  # 4 rows say RED MUG, 1 says red mug large
    assert titles["N9"] == "NEW LAMP"
    assert "POST" not in titles and "B" not in titles
    # with a cut, only rows before it name an item that sold before it
    rows = [*ROWS, *["5001,C3,JUG (NEW NAME),1,2011-03-10 09:00:00,2.0,1.0,UK"] * 3]
    folder = retail_root / "later"
    write_csv(folder, rows)
    assert load_retail(folder).titles["C3"] == "JUG (NEW NAME)"
    assert load_retail(folder, title_cut="2011-03-01").titles["C3"] == "GREEN JUG"


def test_time_split_next_basket_and_new_items(retail_root: Path) -> None:
    data = load_retail(retail_root)
    split = time_split(data.lines, "2011-03-01")
    assert split.baskets == {"1": frozenset({"C3", "N9"}), "2": frozenset({"A1"})}
    assert split.new_items == frozenset({"N9"})
    assert split.counts["customers_without_history"] == 1  # customer 3
    assert split.histories() == {"1": ["A1", "B2", "A1"], "2": ["B2", "C3"]}
    assert split.item_counts() == {"A1": 2, "B2": 2, "C3": 1}


def test_no_information_from_after_the_cut_reaches_training(retail_root: Path) -> None:
    data = load_retail(retail_root)
    cut = pd.Timestamp("2011-03-01")
    split = time_split(data.lines, cut)
    assert (split.train["timestamp"] < cut).all()
    assert not split.new_items & set(split.train["item_id"])
    assert not split.new_items & set(split.item_counts())
    for customer, history in split.histories().items():
        after = data.lines.loc[
            (data.lines["customer_id"] == customer) & (data.lines["timestamp"] >= cut)
        ]
        assert len(history) == len(data.lines.loc[data.lines["customer_id"] == customer]) - len(
            after
        )


def test_validation_split_ends_where_the_test_split_begins(retail_root: Path) -> None:
    data = load_retail(retail_root)
    splits = validation_and_test(data.lines, "2011-03-01", validation_days=40)
    valid = splits.validation
    assert valid.cut == pd.Timestamp("2011-01-20")
    assert valid.baskets == {"1": frozenset({"A1"})}  # invoice 1002; customer 2 has none
    assert (valid.train["timestamp"] < valid.cut).all()
    # the validation split never reads a test basket
    assert not set(valid.baskets["1"]) & {"C3", "N9"}


def test_missing_file_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"online-retail/online_retail\.csv\.xz"):
        load_retail(tmp_path)


def test_missing_column_is_named(tmp_path: Path) -> None:
    header = HEADER.replace("CustomerID", "Customer")
    write_csv(tmp_path, ROWS, header=header)
    with pytest.raises(DataError, match=r"missing column.*CustomerID"):
        load_retail(tmp_path)


@pytest.mark.parametrize(
    ("row", "column", "expected"),
    [
        ("1001,A1,RED MUG,two,2011-01-03 10:00:00,1.5,1.0,UK", "Quantity", "an integer"),
        ("1001,A1,RED MUG,1.5,2011-01-03 10:00:00,1.5,1.0,UK", "Quantity", "an integer"),
        ("1001,A1,RED MUG,1,2011-13-03 10:00:00,1.5,1.0,UK", "InvoiceDate", "a date"),
        ("1001,A1,RED MUG,1,2011-01-03 10:00:00,,1.0,UK", "UnitPrice", "a number"),
        ("1001,,RED MUG,1,2011-01-03 10:00:00,1.5,1.0,UK", "StockCode", "stock code"),
    ],
)
def test_malformed_row_names_line_and_column(
    tmp_path: Path, row: str, column: str, expected: str
) -> None:
    path = write_csv(tmp_path, [ROWS[0], row], xz=False)
    with pytest.raises(DataError, match=expected) as caught:
        load_retail(path=path)
    assert caught.value.line == 3 and caught.value.field == column
    data = load_retail(path=path, skip_bad_rows=True)
    assert data.cleaning["malformed"] == 1 and data.cleaning["rows_kept"] == 1


def test_row_with_too_many_fields_is_an_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path, [ROWS[0], ROWS[1] + ",extra,fields"], xz=False)
    with pytest.raises(DataError, match="malformed row"):
        load_retail(path=path)


def test_a_cut_outside_the_data_is_refused(retail_root: Path) -> None:
    data = load_retail(retail_root)
    with pytest.raises(DataError, match="choose a cut"):
        time_split(data.lines, "2012-01-01")


def test_subsample_keeps_whole_customers(retail_root: Path) -> None:
    data = load_retail(retail_root)
    small = subsample_customers(data, 1, seed=0)
    (customer,) = set(small.lines["customer_id"])
    assert customer in {"1", "2"}  # customers with two or more invoices
    everything = data.lines.loc[data.lines["customer_id"] == customer]
    assert len(small.lines) == len(everything)
    assert set(small.titles) == set(small.lines["item_id"])


@pytest.mark.skipif(
    not (Path("/work/shared/data/online-retail/online_retail.csv.xz")).exists(),
    reason="the Online Retail file is not on this machine",
)
def test_real_file_counts_match_provenance() -> None:
    data = load_retail("/work/shared/data")
    assert data.cleaning["rows_read"] == 541_909
    assert data.cleaning["cancellation"] == 9_288
    assert data.cleaning["adjustment"] == 3
