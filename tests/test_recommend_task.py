"""``shopaug run`` with ``task: recommend`` on a small generated retail file."""

from __future__ import annotations

import json
import lzma
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from shopaug.errors import ConfigError
from shopaug.experiment.recommend import (
    parse_config,
    repeat_then_systems,
    run,
    summary_lines,
)
from shopaug.experiment.recommend_systems import repeat_then
from shopaug.experiment.tasks import load_task
from shopaug.models.two_tower import TwoTowerRecommender

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
WORDS = ["red", "blue", "green", "heart", "star", "mug", "jug", "lamp", "bag", "tin", "card"]


def retail_file(root: Path, *, seed: int = 0) -> Path:
    """60 customers with 4-6 invoices from Jan to Apr 2011; customers favour a 'taste' group of
    items, and items 80-89 first sell in April (new items after a 2011-04-01 cut)."""
    rng = np.random.default_rng(seed)
    titles = [f"{WORDS[i % 5].upper()} {WORDS[5 + i % 6].upper()} {i}" for i in range(90)]
    rows, invoice = [], 100000
    for customer in range(60):
        taste = customer % 4
        days = np.sort(rng.choice(np.arange(1, 118), size=int(rng.integers(4, 7)), replace=False))
        for day in days:
            invoice += 1
            date = np.datetime64("2011-01-01") + int(day)
            pool = [i for i in range(80) if i % 4 == taste]
            if day >= 90:
                pool += [i for i in range(80, 90) if i % 4 == taste]
            for item in rng.choice(pool, size=int(rng.integers(2, 6)), replace=False):
                rows.append(
                    f"{invoice},{20000 + item},{titles[item]},1,{date} 10:00:00,1.0,"
                    f"{1000 + customer}.0,UK"
                )
    folder = root / "online-retail"
    folder.mkdir(parents=True)
    path = folder / "online_retail.csv.xz"
    path.write_bytes(lzma.compress(("\n".join([HEADER, *rows]) + "\n").encode()))
    return path


CONFIG = {
    "cut": "2011-04-01",
    "validation_days": 20,
    "k": 5,
    "depth": 20,
    "encoder": "hashing",
    "factors": {"factors": 8, "iterations": 5, "threads": 1},
    "bpr_iterations": 10,
    "tifu": {
        "group_size": [2, 3],
        "within_decay": [0.9, 1.0],
        "group_decay": [0.8],
        "neighbours": [5],
        "alpha": [0.5, 1.0],
        "frequency_decay": [0.8, 0.9, 1.0],
    },
    "train": {"epochs": 2, "batch_size": 16, "lr": 0.01},
    "rows": [
        {"name": "zero-shot", "sampler": "none"},
        {"name": "uniform", "sampler": "uniform", "negatives": 4},
        {"name": "popularity", "sampler": "popularity", "log_q": True, "negatives": 4},
        {"name": "in-batch", "sampler": "in_batch", "negatives": 4, "log_q": True},
        {"name": "text-hard", "sampler": "text_hard", "negatives": 2},
        {"name": "dynamic", "sampler": "dynamic", "negatives": 2},
        {"name": "augmented", "sampler": "uniform", "negatives": 4, "augment_text": True},
    ],
    "bootstrap": 200,
}


def test_recommend_run_writes_the_run_directory(tmp_path: Path) -> None:
    retail_file(tmp_path / "data")
    config = parse_config({**CONFIG, "data_dir": str(tmp_path / "data")}, "test")
    result = run(config, tmp_path / "run", "test")
    names = [entry["name"] for entry in result["systems"]]
    assert names[:7] == [
        "popularity",
        "repeat purchase",
        "item-item co-occurrence",
        "ALS (implicit)",
        "BPR (implicit)",
        "personal frequency, time-decayed",
        "TIFU-KNN",
    ]
    by_kind = {entry["name"]: entry for entry in result["systems"] if entry["kind"] != "two-tower"}
    # the repeat-aware rows carry the settings chosen on validation from the config's grid
    tifu = by_kind["TIFU-KNN"]["info"]
    assert tifu["searched"] == 2 * 2 * 1 * 1 * 2
    assert tifu["chosen"]["group_size"] in (2, 3) and tifu["chosen"]["neighbours"] == 5
    assert by_kind["personal frequency, time-decayed"]["info"]["chosen"]["alpha"] == 1.0
    assert by_kind["personal frequency, time-decayed"]["info"]["searched"] == 3
    rows = [row["name"] for row in CONFIG["rows"]]
    assert names[7 : 7 + len(rows)] == rows
    # then "repeat purchase, then X" (and "<best repeat-aware>, then X" when that is not repeat
    # purchase): the best learned baseline and the best two-tower row as the fill
    combined = [e for e in result["systems"] if e["kind"].startswith("repeat + ")]
    assert [e["kind"] for e in combined][:2] == ["repeat + baseline", "repeat + two-tower"]
    assert {e["info"]["first"] for e in combined[:2]} == {"repeat purchase"}
    for entry in combined:
        assert entry["name"] == f"{entry['info']['first']}, then {entry['info']['then']}"
        assert entry["info"]["then"] in (
            names[2:5] if entry["kind"] == "repeat + baseline" else rows
        )
    assert names[7 + len(rows) :] == [e["name"] for e in combined]
    # every row has the repeat / explore split and the comparison with TIFU-KNN
    for entry in result["systems"]:
        for name in ("repeat_recall@5", "explore_recall@5", "repeat_ndcg@5", "explore_ndcg@5"):
            assert name in entry["test"], (entry["name"], name)
        assert ("vs_tifu_knn" in entry) is (entry["name"] != "TIFU-KNN")
    # the model directory serves the best servable system on validation: own items first when
    # "repeat purchase, then <row>" beats the best row
    recall = {e["name"]: e["validation"]["recall@5"]["mean"] for e in result["systems"]}
    best_row = max(rows, key=lambda name: recall[name])
    repeat_first = recall[combined[1]["name"]] > recall[best_row]
    assert result["served"]["repeat_first"] is repeat_first
    assert result["served"]["system"] == (combined[1]["name"] if repeat_first else best_row)
    served = json.loads((tmp_path / "run" / "model" / "customers.json").read_text())
    assert served["repeat_first"] is repeat_first
    for entry in result["systems"]:
        recall = entry["test"]["recall@5"]
        assert 0.0 <= recall["ci95"][0] <= recall["mean"] <= recall["ci95"][1] <= 1.0
    # a two-tower row is called "popularity" too (its sampler): look baselines up by kind
    by_name = {entry["name"]: entry for entry in result["systems"] if entry["kind"] == "baseline"}
    # ID baselines never show an item first sold after the cut; the text model can
    assert by_name["ALS (implicit)"]["test"]["new_share@5"]["mean"] == 0.0
    assert by_name["popularity"]["test"]["new_recall@5"]["mean"] == 0.0
    rows = {entry["name"]: entry for entry in result["systems"] if entry["kind"] == "two-tower"}
    assert "vs_reference" in rows["uniform"]
    assert result["selected"]["system"] in names
    for name in ("config.yaml", "manifest.json", "metrics.json", "report.html", "samples.parquet"):
        assert (tmp_path / "run" / name).exists(), name
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["data"]["cleaning"]["rows_read"] > 0
    assert 1 <= manifest["data"]["test_split"]["new_items"] <= 10  # items 80-89 sell from April
    model = TwoTowerRecommender.load(tmp_path / "run" / "model")
    assert not list((tmp_path / "run" / "model").glob("*.pkl"))
    assert model.score_histories([[0, 1]]).shape == (1, len(model.item_ids))
    assert "chosen on validation" in summary_lines(result)[-1]
    assert "repeat purchase" in (tmp_path / "run" / "report.html").read_text()


def test_bad_configs_name_the_field() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({"cutoff": "2011-01-01"}, "cfg")
    with pytest.raises(ConfigError, match=r"rows\[0\]"):
        parse_config({"rows": [{"name": "x", "sampler": "magic"}]}, "cfg")
    with pytest.raises(ConfigError, match="train"):
        parse_config({"train": {"epochs": 0}}, "cfg")
    with pytest.raises(ConfigError, match="unknown baseline"):
        parse_config({"baselines": ["random"]}, "cfg")
    with pytest.raises(ConfigError, match=r"tifu.*alpha needs at least one value"):
        parse_config({"tifu": {"alpha": []}}, "cfg")


def test_profiles_parse_as_recommend_tasks() -> None:
    for name in ("retail-quick", "retail-full"):
        task = load_task(name)
        assert task.name == "recommend"
        assert len(task.config.rows) == 7


def test_repeat_then_keeps_own_items_first_and_fills_from_the_other_system() -> None:
    view = SimpleNamespace(
        catalog=("a", "b", "c", "d", "e"),
        customers=("u1", "u2"),
        histories=((3, 1, 3), ()),  # u1 bought d, b, d; u2 nothing before the cut
    )
    repeat = {"u1": ["d", "b", "a", "c", "e"], "u2": ["a", "c", "e", "b", "d"]}
    other = {"u1": ["e", "b", "c", "a", "d"], "u2": ["e", "d", "a", "b", "c"]}
    combined = repeat_then(repeat, other, view, 4)  # type: ignore[arg-type]
    assert combined == {"u1": ["d", "b", "e", "c"], "u2": ["e", "d", "a", "b"]}


def test_repeat_then_systems_choose_the_fill_by_the_combined_validation_recall() -> None:
    # one customer who bought a and b before; the validation basket is {a, e}
    view = SimpleNamespace(
        catalog=("a", "b", "c", "d", "e"),
        customers=("u1",),
        histories=((0, 1),),
        truth=SimpleNamespace(baskets={"u1": {"a", "e"}}),
    )

    def system(name: str, kind: str, ranked: list[str]) -> dict:
        runs = {"validation": {"u1": ranked}, "test": {"u1": ranked}}
        return {"name": name, "kind": kind, "runs": runs, "info": {}}

    systems = [
        system("repeat purchase", "baseline", ["b", "a", "c", "d", "e"]),  # R@3 0.5
        system("TIFU-KNN", "repeat-aware", ["a", "e", "b", "c", "d"]),  # R@3 1.0
        # alone BPR has the better recall@3 (1.0 against 0.5), but its hit a is an own item,
        # already in the combined list: after the own items, ALS's e is a hit, BPR's c is not
        system("BPR (implicit)", "baseline", ["a", "c", "e", "b", "d"]),
        system("ALS (implicit)", "baseline", ["e", "c", "d", "a", "b"]),
    ]
    config = SimpleNamespace(k=3, depth=5)
    combined = repeat_then_systems(systems, view, view, config)  # type: ignore[arg-type]
    assert [(e["info"]["first"], e["info"]["then"]) for e in combined] == [
        ("repeat purchase", "ALS (implicit)"),
        ("TIFU-KNN", "ALS (implicit)"),  # TIFU-KNN's validation recall beats repeat's
    ]
    assert combined[0]["runs"]["validation"]["u1"] == ["b", "a", "e", "c", "d"]
    assert combined[1]["runs"]["validation"]["u1"] == ["a", "b", "e", "c", "d"]
