"""Shared fixtures: small data written by the tests themselves (never ../shared)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Embedding caches go to a per-session temp folder, never the user's ~/.cache."""
    monkeypatch.setenv("SHOPAUG_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


WANDS_PRODUCTS = [
    # product_id, product_name, product_class, category hierarchy, description, features
    (
        "0",
        "blue velvet sofa",
        "Sofas",
        "Furniture / Living Room / Sofas",
        "a soft sofa",
        "color:blue|material:velvet",
    ),
    (
        "1",
        "red velvet sofa",
        "Sofas",
        "Furniture / Living Room / Sofas",
        "a red sofa",
        "color:red|material:velvet",
    ),
    (
        "2",
        "oak coffee table",
        "Coffee & Cocktail Tables",
        "Furniture / Living Room / Tables",
        "solid oak",
        "material:oak",
    ),
    ("3", "brass floor lamp", "Floor Lamps", "Lighting / Lamps", "tall lamp", "finish:brass"),
    ("4", "wool area rug", "Area Rugs", "Decor / Rugs", "", ""),
]
WANDS_QUERIES = [
    ("0", "blue sofa", "Sofas"),
    ("1", "coffee table", "Coffee & Cocktail Tables"),
    ("2", "lamp", ""),
]
WANDS_LABELS = [
    ("0", "0", "0", "Exact"),
    ("1", "0", "1", "Partial"),
    ("2", "0", "2", "Irrelevant"),
    ("3", "1", "2", "Exact"),
    ("4", "1", "0", "Irrelevant"),
    ("5", "2", "3", "Exact"),
]


def write_tsv(path: Path, header: list[str], rows: list[tuple[str, ...]]) -> Path:
    path.write_text(
        "\t".join(header) + "\n" + "".join("\t".join(row) + "\n" for row in rows), "utf-8"
    )
    return path


@pytest.fixture
def wands_dir(tmp_path: Path) -> Path:
    """A miniature WANDS folder: root/wands/{query,label,product}.csv, same formats as WANDS."""
    folder = tmp_path / "data" / "wands"
    folder.mkdir(parents=True)
    write_tsv(folder / "query.csv", ["query_id", "query", "query_class"], WANDS_QUERIES)
    write_tsv(folder / "label.csv", ["id", "query_id", "product_id", "label"], WANDS_LABELS)
    write_tsv(
        folder / "product.csv",
        [
            "product_id",
            "product_name",
            "product_class",
            "category hierarchy",
            "product_description",
            "product_features",
        ],
        WANDS_PRODUCTS,
    )
    write_tsv(
        folder / "product_subset.tsv",
        ["product_id", "product_name", "product_class", "product_description_first500"],
        [(p[0], p[1], p[2], p[4]) for p in WANDS_PRODUCTS[:3]],
    )
    return tmp_path / "data"


@pytest.fixture
def generic_dir(tmp_path: Path) -> Path:
    """A user folder in the generic schema (CSV)."""
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "products.csv").write_text(
        "product_id,title,text,category,attributes\n"
        'a1,Navy linen shirt,A shirt,Clothing > Shirts,"{""color"": ""navy""}"\n'
        'a2,White linen shirt,A shirt,Clothing > Shirts,"{""color"": ""white""}"\n'
        "a3,Leather belt,A belt,Accessories > Belts,\n",
        "utf-8",
    )
    (folder / "queries.csv").write_text("query_id,query\nq1,navy shirt\nq2,belt\n", "utf-8")
    (folder / "judgments.csv").write_text(
        "query_id,product_id,grade\nq1,a1,2\nq1,a2,1\nq1,a3,0\nq2,a3,2\n", "utf-8"
    )
    (folder / "interactions.csv").write_text(
        "user_id,product_id,event,query_id,position\nu1,a1,click,q1,1\nu2,a3,purchase,,\n",
        "utf-8",
    )
    return folder
