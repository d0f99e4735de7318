"""``shopaug run`` end to end on a tiny config: every artifact, cached reruns, bad configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from shopaug.cli import app
from shopaug.errors import ConfigError
from shopaug.experiment.config import load_run_config, parse_run_config

TINY = {
    "name": "tiny",
    "data": "demo",
    "folds": 2,
    "negatives_per_example": 2,
    "train": {"batch_size": 8, "max_steps": 2, "lr": 5.0e-5, "log_every": 1},
    "augment": {"mining": {"max_positives_per_query": 2, "negatives_per_query": 3}},
    "ablation": [
        {"name": "random", "methods": ["random"]},
        {"name": "bm25 hard", "methods": ["bm25"]},
        {"name": "dynamic", "methods": ["random"], "dynamic": True},
    ],
    "dynamic": {"rounds": 2, "temperature": 0.1, "candidates": 50},
    "reranker": {"enabled": True, "top_k": 5, "max_steps": 1, "batch_size": 4},
    "show_progress": False,
}


def test_profiles_parse() -> None:
    quick = load_run_config("quick")
    assert quick.data == "demo" and len(quick.ablation) == 7
    assert {"random", "bm25", "dense", "near-miss", "synthetic-queries"} <= set(quick.methods())
    assert load_run_config("full").data == "wands-subset"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"folds": 1}, "folds must be at least 2"),
        ({"ablation": [{"name": "x", "methods": ["magic"]}]}, "unknown method"),
        ({"trian": {}}, "unknown key"),
        ({"augment": {"minning": {}}}, "unknown key"),
        ({"dynamic": {"round": 2}}, "unknown key"),
    ],
)
def test_bad_run_config_names_the_problem(patch: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_run_config({**TINY, **patch}, source="test")


@pytest.mark.slow
def test_run_writes_every_artifact_and_reuses_cached_stages(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("config.yaml", "manifest.json", "metrics.json", "report.html", "folds.json"):
        assert (out / name).exists(), name
    assert (out / "model" / "model.safetensors").exists()
    assert list((out / "cache" / "samples").glob("random-*.parquet"))
    metrics = json.loads((out / "metrics.json").read_text())
    names = [row["name"] for row in metrics["ablation"]]
    assert names == ["bm25", "zero-shot", "random", "bm25 hard", "dynamic", "reranker"]
    for row in metrics["ablation"]:
        assert len(row["metrics"]["ndcg@10"]["per_fold"]) == 2
    trained = next(r for r in metrics["ablation"] if r["name"] == "random")
    assert 0 <= trained["p_value_vs_zero_shot"] <= 1
    assert metrics["curves"]["random"] and "loss" in metrics["curves"]["random"][0]
    assert metrics["curves"]["dynamic"][-1]["step"] == 2  # two rounds of one step
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["versions"]["torch"].startswith("2.13.0")
    assert manifest["seeds"]["run"] == 0 and manifest["data"]["name"] == "demo"
    html = (out / "report.html").read_text()
    assert 'data-plot="ablation"' in html and 'data-plot="training-loss"' in html

    results = sorted(p.name for p in (out / "cache" / "results").iterdir())
    again = runner.invoke(app, ["run", str(config), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in (out / "cache" / "results").iterdir()) == results
    assert json.loads((out / "metrics.json").read_text())["ablation"] == metrics["ablation"]


def test_equal_budget_gives_every_row_the_same_number_of_steps() -> None:
    from shopaug.experiment.runner import equal_budget
    from shopaug.train import TrainConfig

    config = TrainConfig(batch_size=8, max_steps=10)
    assert equal_budget(config, 20).epochs == 4  # 3 steps per epoch -> 4 epochs cover 10 steps
    assert equal_budget(config, 200).epochs == 1  # 25 steps per epoch
    assert equal_budget(TrainConfig(batch_size=8), 20).epochs == 1  # no budget: unchanged
