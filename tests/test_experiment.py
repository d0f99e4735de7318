"""``shopaug run`` end to end on a tiny config: every artifact, cached reruns, bad configs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
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
    "validation_fraction": 0.25,
    "train": {"batch_size": 8, "epochs": 2, "lr": 1.0e-4},
    "augment": {"mining": {"max_positives_per_query": 2, "negatives_per_query": 3}},
    "ablation": [
        {"name": "plain fine-tune", "methods": ["positives"]},
        {"name": "random", "methods": ["random"]},
        {"name": "dynamic", "methods": ["random"], "dynamic": True},
    ],
    "dynamic": {"temperature": 0.1, "candidates": 50, "negatives": 3},
    "reranker": {
        "enabled": True,
        "top_k": 5,
        "epochs": 1,
        "batch_size": 4,
        "max_positives_per_query": 1,
    },
    "show_progress": False,
}


def test_profiles_parse() -> None:
    quick = load_run_config("quick")
    assert quick.data == "demo" and quick.ablation[0].name == "plain fine-tune"
    assert {"positives", "dense", "near-miss", "synthetic-queries"} <= set(quick.methods())
    full = load_run_config("full")
    assert full.data == "wands-subset" and full.folds == 5 and full.train_folds is None
    names = [row.name for row in full.ablation]
    assert names[:2] == ["plain fine-tune", "human negatives"]
    assert {"dense hard", "near-miss", "synthetic queries (gemma)", "all"} <= set(names)
    assert full.ablation[0].kind == "fine-tune" and full.ablation[2].kind == "augmented"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"folds": 1}, "folds must be at least 2"),
        ({"ablation": [{"name": "x", "methods": ["magic"]}]}, "unknown method"),
        ({"trian": {}}, "unknown key"),
        ({"augment": {"minning": {}}}, "unknown key"),
        ({"dynamic": {"round": 2}}, "unknown key"),
        ({"tower": "both"}, "tower must be one of"),
        ({"device": "tpu"}, "device must be one of"),
        ({"ablation": [{"name": "x", "methods": ["random"]}] * 2}, "must be unique"),
        (
            {"ablation": [{"name": "x", "methods": ["positives"], "sampler": {"name": "uniform"}}]},
            "needs tower: full",
        ),
        (
            {
                "tower": "full",
                "ablation": [{"name": "x", "methods": ["positives"], "sampler": {"name": "x"}}],
            },
            "sampler",
        ),
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
    # the served model: the chosen configuration retrained on every judged query
    assert (out / "model" / "model.safetensors").exists()
    assert json.loads((out / "model" / "shopaug-model.json").read_text())["kind"] == "query-tower"
    samples = pd.read_parquet(out / "samples.parquet")
    assert {"query_id", "product_id", "kind", "method", "source", "seed"} <= set(samples.columns)
    metrics = json.loads((out / "metrics.json").read_text())
    names = [row["name"] for row in metrics["ablation"]]
    assert names[:6] == [
        "bm25",
        "zero-shot",
        "zero-shot hybrid",
        "plain fine-tune",
        "random",
        "dynamic",
    ]
    assert "random + bm25 (convex)" in names and "random + bm25 (rrf)" in names
    assert names[-1].endswith("+ reranker (cross-encoder)")
    for row in metrics["ablation"]:
        assert len(row["metrics"]["ndcg@10"]["per_fold"]) == 2
        assert 0 <= row["validation"]["ndcg@10"] <= 1
    trained = next(r for r in metrics["ablation"] if r["name"] == "random")
    assert 0 <= trained["p_value_vs_plain_fine_tune"] <= 1
    assert 0 <= trained["p_value_vs_zero_shot_hybrid"] <= 1
    assert trained["epochs"] <= 2 and trained["steps"] > 0
    # selection read validation only: the chosen first stage has the best validation score
    first_stages = [r for r in metrics["ablation"] if r["kind"] != "reranker"]
    best = max(first_stages, key=lambda r: r["validation"]["ndcg@10"])
    assert metrics["reranker"]["first_stage"] == best["name"]
    expected = names[-1] if metrics["reranker"]["served"] else metrics["reranker"]["first_stage"]
    assert metrics["selected"]["system"] == expected
    chosen = next(r for r in metrics["ablation"] if r["name"] == expected)
    assert metrics["metrics"]["ndcg@10"] == chosen["metrics"]["ndcg@10"]
    assert metrics["curves"]["random"] and "loss" in metrics["curves"]["random"][0]
    assert {"method", "fn_rate_exact", "fn_rate_exact_or_partial"} <= set(metrics["audit"][0])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["versions"]["torch"].startswith("2.13.0")
    assert manifest["seeds"]["run"] == 0 and manifest["data"]["name"] == "demo"

    results = sorted(p.name for p in (out / "cache" / "results").iterdir())
    again = runner.invoke(app, ["run", str(config), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in (out / "cache" / "results").iterdir()) == results
    assert json.loads((out / "metrics.json").read_text())["ablation"] == metrics["ablation"]


@pytest.mark.slow
def test_run_trains_both_towers(tmp_path: Path) -> None:
    payload = {
        **TINY,
        "tower": "full",
        "train_folds": 1,
        "ablation": [
            {"name": "human negatives", "methods": ["human-negatives"]},
            {
                "name": "popularity sampler",
                "methods": ["positives"],
                "sampler": {"name": "popularity", "replace": False},
                "sampled_negatives": 2,
                "log_q_correction": True,
            },
        ],
        "fusion": {"enabled": False},
        "reranker": {"enabled": False},
    }
    config = tmp_path / "full.yaml"
    config.write_text(yaml.safe_dump(payload))
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for name in ("human negatives", "popularity sampler"):
        row = next(r for r in metrics["ablation"] if r["name"] == name)
        assert row["steps"] > 0 and len(row["metrics"]["ndcg@10"]["per_fold"]) == 1
    assert not (tmp_path / "run" / "model" / "shopaug-model.json").exists()


def test_a_row_without_a_sampler_keeps_its_cache_key() -> None:
    from shopaug.experiment.config import AblationRow

    row = AblationRow("dense hard", ("dense",))
    assert row.cache_key() == {
        "name": "dense hard",
        "methods": ("dense",),
        "dynamic": False,
        "augment": {},
    }
    sampled = AblationRow("s", ("positives",), sampler={"name": "uniform"})
    assert sampled.cache_key()["sampler"] == {"name": "uniform"}
