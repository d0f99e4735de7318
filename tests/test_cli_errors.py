"""Usage errors of the ``shopaug`` command: each is a clear message and exit code 2.

The checks live in the library (``data.splits``, ``rundir``, ``config``); these tests pin what
the command line shows for them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shopaug.cli import app
from shopaug.config import apply_overrides
from shopaug.data import load_dataset
from shopaug.errors import ConfigError
from shopaug.experiment.config import RunConfig
from shopaug.rundir import check_output_file

runner = CliRunner()


@pytest.fixture(scope="module")
def bm25_samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    samples = tmp_path_factory.mktemp("samples") / "s.parquet"
    made = runner.invoke(
        app, ["augment", "--data", "demo", "--method", "random", "--out", str(samples)]
    )
    assert made.exit_code == 0, made.output
    return samples


@pytest.mark.parametrize("fold", ["9", "5", "-1"])
def test_audit_fold_out_of_range_names_the_valid_range(bm25_samples: Path, fold: str) -> None:
    result = runner.invoke(app, ["audit", str(bm25_samples), "--data", "demo", "--fold", fold])
    assert result.exit_code == 2, result.output
    assert f"--fold must be in 0..4 (0-based, 5 folds), got {fold}" in result.output
    assert "Traceback" not in result.output and result.exception is not None
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(("fold", "folds", "valid"), [("3", "3", "0..2"), ("-1", "5", "0..4")])
def test_augment_fold_out_of_range_names_the_valid_range(
    tmp_path: Path, fold: str, folds: str, valid: str
) -> None:
    out = tmp_path / "s.parquet"
    result = runner.invoke(
        app,
        ["augment", "--data", "demo", "--method", "random", "--fold", fold, "--folds", folds,
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"--fold must be in {valid}" in result.output and f"got {fold}" in result.output
    assert not out.exists()


def test_last_fold_is_reachable_by_its_number(bm25_samples: Path) -> None:
    result = runner.invoke(app, ["audit", str(bm25_samples), "--data", "demo", "--fold", "4"])
    assert result.exit_code == 0, result.output
    assert "leakage vs fold 4 test queries" in result.output


def test_augment_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    out.write_text("mine")
    result = runner.invoke(app, ["augment", "--method", "random", "--out", str(out)])
    assert result.exit_code == 2 and "--out" in result.output and "--force" in result.output
    assert out.read_text() == "mine"

    folder = tmp_path / "folder"
    folder.mkdir()
    result = runner.invoke(app, ["augment", "--method", "random", "--out", str(folder), "--force"])
    assert result.exit_code == 2 and "is a folder" in result.output


def test_check_output_file() -> None:
    with pytest.raises(ConfigError, match="pass --force"):
        check_output_file(Path(__file__), force=False)
    assert check_output_file(Path(__file__), force=True) == Path(__file__)
    with pytest.raises(ConfigError, match=r"--samples .* is a folder"):
        check_output_file(Path(__file__).parent, force=True, option="--samples")


def test_run_device_accepts_only_known_devices(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "quick", "--out", str(tmp_path / "r"), "--device", "gpu"])
    assert result.exit_code == 2
    message = " ".join(result.output.replace("│", " ").split())  # rich wraps it in a box
    assert "'gpu' is not one of 'cpu', 'cuda', 'auto'" in message, result.output
    assert not (tmp_path / "r").exists()


def test_run_device_reaches_the_run_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def fake_run(config: RunConfig, out: Path, *, command: str) -> dict[str, Any]:
        seen["config"] = config
        return {
            "dataset": "demo",
            "trained_folds": 1,
            "folds": 5,
            "ablation": [],
            "selected": {"system": "bm25"},
            "metrics": {"ndcg@10": {"mean": 0.5}},
        }

    monkeypatch.setattr("shopaug.experiment.runner.run_experiment", fake_run)
    args = ["run", "quick", "--out", str(tmp_path), "--seed", "7", "--train-folds", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert (config.seed, config.train_folds) == (7, 1)
    assert config.data == "demo"  # not given: the profile's value is kept
    if "device" not in {f.name for f in dataclasses.fields(RunConfig)}:
        pytest.skip("RunConfig has no device field yet")
    assert config.device == "cpu"  # no --device: the config's own device

    result = runner.invoke(app, [*args, "--device", "auto"])
    assert result.exit_code == 0, result.output
    assert seen["config"].device == "auto" and type(seen["config"].device) is str


def test_apply_overrides_skips_none_and_refuses_unknown_keys() -> None:
    config = RunConfig(data="wands", seed=1)
    assert apply_overrides(config, {"seed": 4, "data": None, "data_dir": Path("d")}) is config
    assert (config.seed, config.data, config.data_dir) == (4, "wands", "d")
    with pytest.raises(ConfigError, match=r"command line: unknown setting.*sede.*known: .*seed"):
        apply_overrides(config, {"sede": 4}, source="command line")


def test_train_uses_one_seed_and_data_that_does_not_depend_on_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def fake_finetune(samples: Path, dataset: Any, out: Path, **kwargs: Any) -> Any:
        seen.update(kwargs, dataset=dataset)
        raise ConfigError("stop here")

    monkeypatch.setattr("shopaug.experiment.finetune.finetune_from_samples", fake_finetune)
    config = tmp_path / "run.yaml"
    config.write_text("seed: 0\n")
    result = runner.invoke(
        app,
        ["train", "--samples", str(tmp_path / "s.parquet"), "--out", str(tmp_path / "m"),
         "--config", str(config), "--seed", "3"],
    )  # fmt: skip
    assert result.exit_code == 2 and "stop here" in result.output
    assert seen["config"].seed == 3 and "seed" not in seen
    demo = load_dataset("demo")
    assert seen["dataset"].products == demo.products
    assert seen["dataset"].judgments == demo.judgments
