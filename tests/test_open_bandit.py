"""The Open Bandit loader: layout, checks with file/line/column, time order and time split."""

from __future__ import annotations

import lzma
import re
from pathlib import Path

import numpy as np
import pytest

from shopaug.data.loaders import data_dir
from shopaug.data.open_bandit import load_open_bandit, time_split
from shopaug.errors import DataError

ITEMS = (
    ",item_id,item_feature_0,item_feature_1,item_feature_2,item_feature_3\n"
    "0,0,-0.5,a1,b1,c1\n"
    "1,1,0.25,a2,b1,c2\n"
    "2,2,1.0,a1,b2,c1\n"
)
HEADER = (
    ",timestamp,item_id,position,click,propensity_score,user_feature_0,user_feature_1,"
    "user_feature_2,user_feature_3,user-item_affinity_0,user-item_affinity_1,"
    "user-item_affinity_2"
)
ROWS = [  # out of time order on purpose: the loader sorts by timestamp
    "0,2019-11-24 00:00:03+00:00,1,2,1,0.333333,u1,v1,w1,x1,0.0,2.0,0.0",
    "1,2019-11-24 00:00:01+00:00,0,1,0,0.333333,u2,v1,w1,x1,1.0,0.0,0.0",
    "2,2019-11-24 00:00:02+00:00,2,3,0,0.333333,u1,v2,w1,x1,0.0,0.0,0.0",
    "3,2019-11-24 00:00:04+00:00,2,1,0,0.333333,u1,v2,w2,x1,0.0,0.0,3.0",
]


def write_folder(
    root: Path,
    *,
    policy: str = "random",
    campaign: str = "men",
    rows: list[str] | None = None,
    header: str = HEADER,
    items: str = ITEMS,
    compress: bool = False,
) -> Path:
    """A (policy, campaign) folder of the sample layout under ``root``; returns the folder."""
    folder = root / "open-bandit-sample" / "obd" / policy / campaign
    folder.mkdir(parents=True, exist_ok=True)
    text = header + "\n" + "\n".join(ROWS if rows is None else rows) + "\n"
    if compress:
        (folder / f"{campaign}.csv.xz").write_bytes(lzma.compress(text.encode()))
        (folder / "item_context.csv.xz").write_bytes(lzma.compress(items.encode()))
    else:
        (folder / f"{campaign}.csv").write_text(text)
        (folder / "item_context.csv").write_text(items)
    return folder


def test_loads_impressions_in_time_order_with_affinity(tmp_path: Path) -> None:
    write_folder(tmp_path)
    log = load_open_bandit("random", "men", root=tmp_path)
    assert log.n_items == 3 and log.name == "random/men"
    assert log.impressions["item_id"].tolist() == [0, 2, 1, 2]
    assert log.impressions["click"].tolist() == [0, 0, 1, 0]
    assert log.impressions["position"].tolist() == [1, 3, 2, 1]
    assert log.impressions["user_feature_0"].tolist() == ["u2", "u1", "u1", "u1"]
    np.testing.assert_array_equal(log.affinity[:, 0], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(log.affinity[:, 2], [0.0, 0.0, 0.0, 3.0])
    assert log.items["item_feature_1"].tolist() == ["a1", "a2", "a1"]
    assert log.items["item_feature_0"].tolist() == [-0.5, 0.25, 1.0]


def test_reads_xz_files_and_finds_data_dir_from_environment(tmp_path: Path, monkeypatch) -> None:
    write_folder(tmp_path, policy="bts", campaign="women", compress=True)
    monkeypatch.setenv("SHOPAUG_DATA_DIR", str(tmp_path))
    log = load_open_bandit("bts", "women")
    assert len(log.impressions) == 4 and log.source.name == "women.csv.xz"


def test_time_split_keeps_order_and_fraction(tmp_path: Path) -> None:
    write_folder(tmp_path)
    early, late = time_split(load_open_bandit("random", "men", root=tmp_path), 0.25)
    assert early.impressions["item_id"].tolist() == [0, 2, 1]
    assert late.impressions["item_id"].tolist() == [2]
    assert early.impressions["timestamp"].max() < late.impressions["timestamp"].min()
    assert late.affinity.tolist() == [[0.0, 0.0, 3.0]]
    with pytest.raises(ValueError, match="test_fraction"):
        time_split(early, 1.5)


@pytest.mark.parametrize(
    ("row", "column", "expected"),
    [
        ("9,2019-11-24 00:00:05+00:00,1,2,2,0.3,u,v,w,x,0,0,0", "click", "0 or 1"),
        ("9,2019-11-24 00:00:05+00:00,1,4,0,0.3,u,v,w,x,0,0,0", "position", "1, 2 or 3"),
        ("9,2019-11-24 00:00:05+00:00,3,1,0,0.3,u,v,w,x,0,0,0", "item_id", "0..2"),
        ("9,2019-11-24 00:00:05+00:00,1,1,0,0,u,v,w,x,0,0,0", "propensity_score", "in (0, 1]"),
        ("9,2019-11-24 00:00:05+00:00,1,1,0,0.3,u,v,w,x,0,abc,0", "user-item_affinity_1", "finite"),
        ("9,yesterday,1,1,0,0.3,u,v,w,x,0,0,0", "timestamp", "ISO date-time"),
        ("9,2019-11-24 00:00:05+00:00,1,1,0,0.3,u,,w,x,0,0,0", "user_feature_1", "non-empty"),
    ],
)
def test_bad_values_name_file_line_and_column(
    tmp_path: Path, row: str, column: str, expected: str
) -> None:
    write_folder(tmp_path, rows=[*ROWS[:2], row])
    with pytest.raises(DataError, match=re.escape(expected)) as caught:
        load_open_bandit("random", "men", root=tmp_path)
    assert caught.value.line == 4  # header is line 1, the bad row is the third data row
    assert caught.value.field == column
    assert caught.value.path is not None and caught.value.path.endswith("men.csv")


def test_missing_column_and_missing_file(tmp_path: Path) -> None:
    write_folder(tmp_path, header=HEADER.replace(",click,", ",clicked,"))
    with pytest.raises(DataError, match=r"missing column.*click"):
        load_open_bandit("random", "men", root=tmp_path)
    with pytest.raises(DataError, match="SHOPAUG_DATA_DIR"):
        load_open_bandit("random", "women", root=tmp_path)
    with pytest.raises(ValueError, match="campaign"):
        load_open_bandit("random", "kids", root=tmp_path)


def test_items_must_match_the_folder(tmp_path: Path) -> None:
    # an affinity column for an item the folder's item_context does not have
    header = HEADER + ",user-item_affinity_3"
    write_folder(tmp_path, header=header, rows=[r + ",0.0" for r in ROWS])
    with pytest.raises(DataError, match="user-item_affinity_3 name items outside"):
        load_open_bandit("random", "men", root=tmp_path)
    duplicate = ITEMS + "3,1,0.0,a,b,c\n"
    write_folder(tmp_path, items=duplicate)
    with pytest.raises(DataError, match="item_id 1 appears again") as caught:
        load_open_bandit("random", "men", root=tmp_path)
    assert caught.value.line == 5


SAMPLE = data_dir() / "open-bandit-sample" / "obd"


@pytest.mark.skipif(not SAMPLE.exists(), reason="the Open Bandit sample is not in the data dir")
def test_real_sample_matches_provenance() -> None:
    log = load_open_bandit("random", "all")
    assert (len(log.impressions), int(log.impressions["click"].sum()), log.n_items) == (
        10_000,
        38,
        80,
    )
    assert np.allclose(log.impressions["propensity_score"], 1 / 80)
