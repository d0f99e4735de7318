"""Unreadable data files get a clear error naming the file, never a raw OS or parser error.

Each case writes a small generic data folder (products, queries, judgments) and breaks its
products table one way: a folder in its place, a broken symbolic link, a pipe, no read
permission, a truncated or corrupt Parquet or gzip file, bytes that are not UTF-8.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from shopaug.cli import app
from shopaug.data.loaders import load_esci, load_folder, load_wands
from shopaug.data.tables import check_readable, find_table, read_table, sha256_of
from shopaug.errors import DataError

PRODUCTS_CSV = "product_id,title\np1,blue sofa\np2,oak table\n"


def data_folder(root: Path) -> Path:
    """A valid generic folder without its products table (each test adds a broken one)."""
    folder = root / "data"
    folder.mkdir()
    (folder / "queries.csv").write_text("query_id,query\nq1,sofa\n", encoding="utf-8")
    (folder / "judgments.csv").write_text("query_id,product_id,grade\nq1,p1,1\n", encoding="utf-8")
    return folder


def products_parquet(path: Path, rows: int = 2000) -> bytes:
    frame = pd.DataFrame(
        {"product_id": [f"p{i}" for i in range(rows)], "title": ["blue sofa"] * rows}
    )
    frame.to_parquet(path)
    return path.read_bytes()


def make_folder_in_place(folder: Path) -> Path:
    (folder / "products.csv").mkdir()
    return folder / "products.csv"


def make_broken_symlink(folder: Path) -> Path:
    (folder / "products.csv").symlink_to(folder / "gone.csv")
    return folder / "products.csv"


def make_pipe(folder: Path) -> Path:
    os.mkfifo(folder / "products.csv")
    return folder / "products.csv"


def make_truncated_parquet(folder: Path) -> Path:
    path = folder / "products.parquet"
    data = products_parquet(path)
    path.write_bytes(data[: len(data) // 2])  # the footer is gone
    return path


def make_corrupt_parquet(folder: Path) -> Path:
    path = folder / "products.parquet"
    data = bytearray(products_parquet(path))
    data[100:1500] = b"\0" * 1400  # footer intact, column pages damaged
    path.write_bytes(bytes(data))
    return path


def make_truncated_gzip(folder: Path) -> Path:
    path = folder / "products.csv.gz"
    data = gzip.compress((PRODUCTS_CSV * 200).encode("utf-8"))
    path.write_bytes(data[: len(data) // 2])
    return path


def make_gz_that_is_not_gzip(folder: Path) -> Path:
    path = folder / "products.csv.gz"
    path.write_text(PRODUCTS_CSV, encoding="utf-8")
    return path


def make_latin1_csv(folder: Path) -> Path:
    path = folder / "products.csv"
    path.write_bytes("product_id,title\np1,café sofa\n".encode("latin-1"))
    return path


def make_latin1_gzip(folder: Path) -> Path:
    path = folder / "products.csv.gz"
    path.write_bytes(gzip.compress("product_id,title\np1,ok\np2,café\n".encode("latin-1")))
    return path


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "folder": (make_folder_in_place, "is a folder, expected a file"),
    "broken_symlink": (make_broken_symlink, "is a broken symbolic link"),
    "pipe": (make_pipe, "is not a regular file"),
    "truncated_parquet": (make_truncated_parquet, "truncated or corrupt Parquet file"),
    "corrupt_parquet": (make_corrupt_parquet, "truncated or corrupt Parquet file"),
    "truncated_gzip": (make_truncated_gzip, "truncated or corrupt gzip file"),
    "not_gzip": (make_gz_that_is_not_gzip, "truncated or corrupt gzip file"),
    "latin1_csv": (make_latin1_csv, "line 2: is not valid UTF-8"),
    "latin1_gzip": (make_latin1_gzip, "line 3: is not valid UTF-8"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_unreadable_products_table_names_the_file(tmp_path: Path, case: str) -> None:
    make, expected = CASES[case]
    folder = data_folder(tmp_path)
    broken = make(folder)

    with pytest.raises(DataError, match=expected) as caught:
        load_folder(folder)

    assert caught.value.path == str(broken)
    assert str(caught.value).startswith(str(broken))


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root reads files without permission, so a permission error cannot be made",
)
def test_unreadable_permission_names_the_file(tmp_path: Path) -> None:
    folder = data_folder(tmp_path)
    path = folder / "products.csv"
    path.write_text(PRODUCTS_CSV, encoding="utf-8")
    path.chmod(0)
    try:
        with pytest.raises(DataError, match="permission denied") as caught:
            load_folder(folder)
    finally:
        path.chmod(0o644)
    assert caught.value.path == str(path)


def test_check_readable_accepts_a_file_and_a_working_link(tmp_path: Path) -> None:
    path = tmp_path / "products.csv"
    path.write_text(PRODUCTS_CSV, encoding="utf-8")
    link = tmp_path / "link.csv"
    link.symlink_to(path)

    assert check_readable(path) == path
    assert check_readable(link) == link
    assert list(read_table(link)["product_id"]) == ["p1", "p2"]


def test_missing_file_and_broken_link_are_told_apart(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file does not exist"):
        read_table(tmp_path / "absent.csv")
    link = tmp_path / "products.csv"
    link.symlink_to(tmp_path / "absent.csv")
    assert find_table(tmp_path, "products") == link  # found, so the error can name the link
    with pytest.raises(DataError, match=r"points to .*absent\.csv"):
        read_table(link)


def test_checksum_of_a_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a folder") as caught:
        sha256_of(tmp_path)
    assert caught.value.path == str(tmp_path)


def test_wands_with_a_folder_as_label_file_names_it(tmp_path: Path) -> None:
    wands = tmp_path / "wands"
    wands.mkdir()
    (wands / "query.csv").write_text("query_id\tquery\n0\tsofa\n", encoding="utf-8")
    (wands / "label.csv").mkdir()
    (wands / "product.csv").write_text("product_id\tproduct_name\n", encoding="utf-8")

    with pytest.raises(DataError, match="is a folder") as caught:
        load_wands(tmp_path)
    assert caught.value.path == str(wands / "label.csv")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"judgmentRatings": [', "not an OpenSearch judgment file"),
        ('{"judgmentRatings": "café"}'.encode("latin-1"), "is not valid UTF-8"),
        (None, "is a folder"),
    ],
)
def test_esci_judgment_file_errors_name_it(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    path = tmp_path / "esci-subset" / "opensearch_esci_us_judgments.json"
    path.parent.mkdir()
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)

    with pytest.raises(DataError, match=expected) as caught:
        load_esci(tmp_path)
    assert caught.value.path == str(path)


def test_data_check_command_prints_the_error_not_a_traceback(tmp_path: Path) -> None:
    folder = data_folder(tmp_path)
    (folder / "products.csv").mkdir()

    result = CliRunner().invoke(app, ["data", "check", "--data", str(folder)])

    assert result.exit_code != 0
    assert not isinstance(result.exception, IsADirectoryError)
    assert "products.csv" in result.output and "is a folder" in result.output
    assert "Traceback" not in result.output


def test_valid_parquet_and_gzip_still_read(tmp_path: Path) -> None:
    folder = data_folder(tmp_path)
    products_parquet(folder / "products.parquet", rows=3)
    assert [p.id for p in load_folder(folder).products] == ["p0", "p1", "p2"]
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(PRODUCTS_CSV.encode("utf-8")))
    assert json.loads(read_table(gz).to_json(orient="records")) == [
        {"product_id": "p1", "title": "blue sofa"},
        {"product_id": "p2", "title": "oak table"},
    ]
