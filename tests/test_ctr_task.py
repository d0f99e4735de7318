"""``shopaug run`` with ``task: ctr`` on a small folder written by the test: the run directory,
the variants, the off-policy checks and the config errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from ctr_fixtures import write_bandit_data
from shopaug.errors import ConfigError
from shopaug.experiment.tasks import load_task, profile_names

pytest.importorskip("sklearn")


def _config(tmp_path: Path, **overrides: object) -> Path:
    body = {
        "task": "ctr",
        "data_dir": str(write_bandit_data(tmp_path / "data")),
        "campaigns": ["men"],
        "models": ["logistic"],
        "positions": ["feature", "ipw"],
        "negative_rates": [1.0, 0.5],
        "bootstrap": 20,
        "policy_temperature": 0.5,
        **overrides,
    }
    path = tmp_path / "ctr.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_ctr_run_writes_the_run_directory(tmp_path: Path) -> None:
    task = load_task(str(_config(tmp_path)))
    assert task.name == "ctr"
    out = tmp_path / "run"
    result = task.module.run(task.config, out, "shopaug run ctr.yaml")
    for name in ("config.yaml", "manifest.json", "metrics.json", "report.html"):
        assert (out / name).exists(), name
    assert (out / "model" / "ctr-model.json").exists() and (out / "model" / "items.json").exists()
    assert not list(out.rglob("*.pkl"))
    metrics = json.loads((out / "metrics.json").read_text())
    names = [row["name"] for row in metrics["variants"]]
    assert names[0] == "base rate (constant)" and len(names) == 1 + 4
    # 600 rows per log: 30 % test, of the rest 20 % validation; random + bts logs
    assert metrics["impressions"] == {"train": 672, "validation": 168, "test": 360}
    for row in metrics["variants"][1:]:
        low, high = row["auc"]["ci95"]
        assert low <= row["auc"]["mean"] <= high
        assert set(row["ope"]) >= {"ips", "snips", "dr", "mean_weight"}
    assert result["selected"]["system"] in names
    check = metrics["ope"]["validation"]
    assert check["rounds"] == 180  # the random test log
    # every weight of the uniform policy on a uniform log is 1: logged value = on-policy mean
    assert metrics["ope"]["logged_policy"]["value"] == pytest.approx(check["truth"]["value"])
    page = (out / "report.html").read_text()
    assert 'data-plot="reliability"' in page and "Estimators where the truth is known" in page
    lines = task.module.summary_lines(result)
    assert any(line.startswith("logistic / position ipw") for line in lines)


def test_ope_validation_on_uniform_policy_is_close_to_truth(tmp_path: Path) -> None:
    task = load_task(str(_config(tmp_path, negative_rates=[1.0], positions=["feature"])))
    result = task.module.run(task.config, tmp_path / "run", "test")
    check = result["ope"]["validation"]
    truth = check["truth"]["value"]
    for name in ("ips", "snips", "dr"):
        assert np.isfinite(check["estimates"][name]["value"])
    # SNIPS and DR of the uniform policy from the skewed log land near the on-policy rate
    assert abs(check["estimates"]["snips"]["value"] - truth) < 0.08
    assert abs(check["estimates"]["dr"]["value"] - truth) < 0.08


def test_feature_study_and_learning_curve(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        positions=["feature"],
        negative_rates=[1.0],
        feature_models=["logistic"],
        feature_sets=["item", "item*position"],
        learning_curve=[0.5, 1.0],
    )
    task = load_task(str(config))
    result = task.module.run(task.config, tmp_path / "run", "test")
    assert result["variants"][0]["normalized_entropy"]["mean"] == 1.0  # the base rate itself
    for row in result["variants"][1:]:
        low, high = row["normalized_entropy"]["ci95"]
        assert low <= row["normalized_entropy"]["mean"] <= high
    study = result["feature_study"]
    assert [(row["model"], row["features"]) for row in study] == [
        ("logistic", "item"),
        ("logistic", "item*position"),
    ]
    curve = result["learning_curve"]
    assert [row["fraction"] for row in curve] == [0.5, 1.0]
    assert curve[0]["train_impressions"] == 336 and curve[1]["train_impressions"] == 672
    # the whole training window with every feature is the variant of the main table
    full = next(
        r for r in result["variants"] if r["name"].startswith("logistic / position feature")
    )
    assert curve[1]["log_loss"]["mean"] == pytest.approx(full["log_loss"]["mean"])


def test_profiles_parse() -> None:
    assert {"ctr-quick", "ctr-full"} <= set(profile_names())
    quick = load_task("ctr-quick")
    assert quick.name == "ctr" and quick.config.rows == 3000
    assert len(load_task("ctr-full").config.variants()) == 18


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"models": ["svm"]}, "models"),
        ({"positions": []}, "positions"),
        ({"negative_rates": [0]}, "negative_rates"),
        ({"test_fraction": 1.2}, "test_fraction"),
        ({"estimator": {"treez": 3}}, "treez"),
        ({"colour": "red"}, "colour"),
        ({"feature_sets": ["item", "colour"]}, "feature_sets"),
        ({"learning_curve": [0.0]}, "learning_curve"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_task(str(_config(tmp_path, **overrides)))
