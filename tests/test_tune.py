"""shopaug tune: search space, trial configs, the objective, and resumable studies.

Most tests run the search with a stand-in for ``run_experiment`` that writes the artifacts a
real run writes (fold training curves, the metrics payload) from a known formula, so the loop
is checked in milliseconds; one slow test runs real trials on the demo data.
"""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from shopaug.cli import app
from shopaug.errors import ConfigError
from shopaug.experiment.config import AblationRow, RunConfig, load_run_config
from shopaug.tune import (
    SearchSpace,
    TrialChoice,
    TuneSettings,
    parse_search_space,
    read_objective,
    suggest_choice,
    trial_config,
    tune,
)
from shopaug.tune.search import _exclusive

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_importing_tune_does_not_load_torch() -> None:
    code = "import shopaug.tune, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # and the training loop's names still resolve, on first use
    code = "from shopaug.train import fit, TrainConfig; import sys; assert 'torch' in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


ROWS = [
    AblationRow("random", ("random",)),
    AblationRow("bm25 hard", ("bm25",)),
    AblationRow("dynamic", ("random",), dynamic=True),
]


def base_config(**changes: Any) -> RunConfig:
    config = RunConfig(
        name="toy",
        folds=3,
        train={"max_steps": 2, "lr": 5e-5, "batch_size": 16, "warmup_ratio": 0.1},
        ablation=list(ROWS),
    )
    for key, value in changes.items():
        setattr(config, key, value)
    return config


# --- search space -----------------------------------------------------------------------------


def draw(space: SearchSpace, base: RunConfig, seed: int, n: int) -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        suggest_choice(trial, space, base)
        study.tell(trial, 0.0)
    return study.trials


def test_suggestions_stay_in_the_default_ranges_and_record_the_right_params() -> None:
    space, base = SearchSpace(), base_config()
    trials = draw(space, base, seed=1, n=200)
    for trial in trials:
        p = trial.params
        assert 5e-6 <= p["lr"] <= 2e-4
        assert p["batch_size"] in (8, 16, 32)
        assert 1 <= p["negatives_per_example"] <= 7
        assert 0.02 <= p["temperature"] <= 0.2
        assert p["sources"] in {"random", "bm25 hard", "dynamic"}
        assert ("lambda_div" in p) == p["diversity"]
        if p["diversity"]:
            assert 0.01 <= p["lambda_div"] <= 1.0
        assert ("dynamic_temperature" in p) == (p["sources"] == "dynamic")
    distributions = trials[0].distributions
    for name in ("lr", "temperature"):
        assert isinstance(distributions[name], optuna.distributions.FloatDistribution)
        assert distributions[name].log  # type: ignore[attr-defined]
    # 200 draws reach every choice, and spread the learning rate over its decades
    seen = {t.params["sources"] for t in trials}
    assert seen == {"random", "bm25 hard", "dynamic"}
    lrs = [t.params["lr"] for t in trials]
    assert min(lrs) < 2e-5 and max(lrs) > 5e-5


def test_same_seed_same_suggestions_other_seed_other_ones() -> None:
    space, base = SearchSpace(), base_config()
    first = [t.params for t in draw(space, base, seed=7, n=5)]
    again = [t.params for t in draw(space, base, seed=7, n=5)]
    other = [t.params for t in draw(space, base, seed=8, n=5)]
    assert first == again
    assert first != other


def test_fixed_trial_rebuilds_a_choice_and_off_diversity_is_zero() -> None:
    params = {
        "lr": 3e-5,
        "batch_size": 8,
        "negatives_per_example": 2,
        "temperature": 0.07,
        "diversity": False,
        "sources": "dynamic",
        "dynamic_temperature": 0.3,
    }
    choice = suggest_choice(optuna.trial.FixedTrial(params), SearchSpace(), base_config())
    assert choice == TrialChoice(
        lr=3e-5,
        batch_size=8,
        negatives_per_example=2,
        temperature=0.07,
        lambda_div=0.0,
        row=ROWS[2],
        dynamic_temperature=0.3,
    )


def test_a_fixed_space_always_gives_the_same_choice() -> None:
    space = SearchSpace(
        lr=(1e-5, 1e-5),
        batch_size=(4,),
        negatives_per_example=(2, 2),
        temperature=(0.05, 0.05),
        diversity_optional=False,
        lambda_div=(0.1, 0.1),
        sources=(AblationRow("only random", ("random",)),),
    )
    for trial in draw(space, base_config(), seed=3, n=3):
        assert trial.params == {
            "lr": 1e-5,
            "batch_size": 4,
            "negatives_per_example": 2,
            "temperature": 0.05,
            "lambda_div": 0.1,
            "sources": "only random",
        }


def test_search_space_from_yaml_mapping() -> None:
    space = parse_search_space(
        {
            "lr": [1e-5, 1e-4],
            "batch_size": [16, 32],
            "sources": [
                {"name": "cheap", "methods": ["random"]},
                {"name": "hard", "methods": ["bm25", "near-miss"], "dynamic": True},
            ],
        },
        source="space.yaml",
    )
    assert space.lr == (1e-5, 1e-4) and space.batch_size == (16, 32)
    assert space.sources == (
        AblationRow("cheap", ("random",)),
        AblationRow("hard", ("bm25", "near-miss"), dynamic=True),
    )
    assert space.temperature == SearchSpace().temperature  # untouched keys keep defaults
    assert parse_search_space(space.as_mapping(), source="round trip") == space


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"learning_rate": [1e-5, 1e-4]}, "unknown key(s) learning_rate"),
        ({"lr": [1e-4, 1e-5]}, "lr needs low <= high"),
        ({"lr": [0.0, 1e-4]}, "lr is drawn log-uniformly"),
        ({"temperature": [0.1]}, "temperature must be [low, high]"),
        ({"batch_size": []}, "batch_size must be a non-empty list"),
        ({"batch_size": [8, 8]}, "batch_size lists a size twice"),
        ({"negatives_per_example": [-1, 3]}, "negatives_per_example low must be >= 0"),
        ({"sources": [{"name": "x", "methods": ["magic"]}]}, "sources[0] (x): methods"),
        (
            {"sources": [{"name": "x", "methods": ["random"]}, {"name": "x", "methods": ["bm25"]}]},
            "sources repeat a name",
        ),
    ],
)
def test_bad_search_space_names_the_field(payload: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_search_space(payload, source="space.yaml")
    assert message in str(error.value)


def test_trial_config_applies_the_choice_to_a_copy() -> None:
    base = base_config()
    base.reranker.enabled = True
    choice = TrialChoice(
        lr=1e-4,
        batch_size=8,
        negatives_per_example=5,
        temperature=0.1,
        lambda_div=0.2,
        row=ROWS[2],
        dynamic_temperature=0.25,
    )
    config = trial_config(base, choice, name="toy-trial-4", train_folds=2)
    assert config.name == "toy-trial-4"
    assert config.train == {
        "max_steps": 2,
        "warmup_ratio": 0.1,
        "lr": 1e-4,
        "batch_size": 8,
        "temperature": 0.1,
        "lambda_div": 0.2,
    }
    assert config.negatives_per_example == 5
    assert config.ablation == [AblationRow("dynamic", ("random",), dynamic=True)]
    assert config.dynamic.temperature == 0.25
    assert config.reranker.enabled is False and config.train_folds == 2
    assert config.methods() == ["random"]
    # the base is untouched
    assert base.train["lr"] == 5e-5 and len(base.ablation) == 3 and base.reranker.enabled
    assert base.dynamic.temperature == 0.05
    with pytest.raises(ConfigError, match=re.escape("--tune-folds must be in 1..3")):
        trial_config(base, choice, name="x", train_folds=4)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"trials": 0}, "--trials must be an integer >= 1"),
        ({"timeout": 0}, "--timeout must be > 0"),
        ({"split": "train"}, "--split must be one of validation, test"),
        ({"metric": "recall@100"}, "use --metric ndcg@10 or --split test"),
        ({"metric": "ndcg@5", "split": "test"}, "--metric must be one of"),
    ],
)
def test_bad_settings_are_clear_errors(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        TuneSettings(**{"trials": 2, **changes})


# --- the objective ----------------------------------------------------------------------------


def write_curve(path: Path, values: list[float | None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"step": i + 1, "loss": 1.0, "val_ndcg@10": v}) for i, v in enumerate(values)
    ]
    path.write_text("\n".join(lines) + "\n")


def _result(row: str, validation: float | None, test: float = 0.9) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": row,
        "validation": {},
        "metrics": {"ndcg@10": {"mean": test}},
    }
    if validation is not None:
        entry["validation"]["ndcg@10"] = validation
    return {"metrics": {"ndcg@10": {"mean": test}}, "ablation": [entry]}


def test_objective_is_the_row_validation_score_and_test_is_separate(tmp_path: Path) -> None:
    result = _result("bm25 hard", 0.5)
    value = read_objective(
        tmp_path, result, metric="ndcg@10", split="validation", row_name="bm25 hard"
    )
    assert value == pytest.approx(0.5)
    assert read_objective(
        tmp_path, result, metric="ndcg@10", split="test", row_name="bm25 hard"
    ) == pytest.approx(0.9)


def test_objective_without_validation_values_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no validation ndcg@10 for row 'random'"):
        read_objective(
            tmp_path,
            _result("random", None),
            metric="ndcg@10",
            split="validation",
            row_name="random",
        )
    with pytest.raises(ValueError, match="the objective is nan"):
        read_objective(
            tmp_path,
            _result("random", float("nan")),
            metric="ndcg@10",
            split="validation",
            row_name="random",
        )


# --- the search loop, with a stand-in for run_experiment --------------------------------------


def known_score(config: RunConfig) -> float:
    """Validation score of the stand-in: peaks at lr = 3e-5, better with the bm25 row."""
    bonus = 0.1 if config.ablation[0].name == "bm25 hard" else 0.0
    return 0.5 + bonus - 0.1 * abs(math.log10(config.train["lr"] / 3e-5))


class FakeRun:
    """Writes what run_experiment writes that the tuner reads; records each call."""

    def __init__(self, fail_on: set[int] | None = None, interrupt_on: int | None = None) -> None:
        self.calls: list[tuple[str, RunConfig]] = []
        self.fail_on = fail_on or set()
        self.interrupt_on = interrupt_on

    def __call__(self, config: RunConfig, out: Path) -> dict[str, Any]:
        self.calls.append((out.name, config))
        number = int(out.name)
        if number == self.interrupt_on:
            raise KeyboardInterrupt
        if number in self.fail_on:
            raise ValueError("loss is not finite")
        assert (out / "manifest.json").exists() and (out / "cache/samples").is_dir()
        row = config.ablation[0].name.replace(" ", "-")
        score = known_score(config)
        for fold in range(config.train_folds or config.folds):
            (out / f"training/fold-{fold}/{row}/model").mkdir(parents=True)
        (out / "model").mkdir()
        return _result(config.ablation[0].name, score, test=score - 0.05)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_tune_writes_study_best_config_and_csv_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "tune"
    base = base_config()
    base.reranker.enabled = True
    run = FakeRun()
    first = tune(base, out, TuneSettings(trials=2, tune_folds=2), run=run)
    assert first.trials == 2 and first.new_trials == 2 and not first.timed_out
    assert (out / "optuna.sqlite").exists()
    assert [name for name, _ in run.calls] == ["0", "1"]
    for _, config in run.calls:
        assert len(config.ablation) == 1 and config.train_folds == 2
        assert not config.reranker.enabled

    rows = read_csv(out / "trials.csv")
    assert [r["number"] for r in rows] == ["0", "1"] and {r["state"] for r in rows} == {"COMPLETE"}
    values = {int(r["number"]): float(r["value"]) for r in rows}
    expected = {int(n): known_score(c) for n, c in run.calls}
    assert values == pytest.approx(expected)
    assert float(rows[0]["user_attrs_test_ndcg@10"]) == pytest.approx(expected[0] - 0.05)

    best = max(expected, key=expected.get)  # type: ignore[arg-type]
    assert first.best_number == best and first.best_value == pytest.approx(expected[best])
    best_config = load_run_config(str(out / "best.yaml"))
    ran = dict(run.calls)[str(best)]
    assert best_config.train == ran.train
    # parse_run_config keeps YAML lists as lists in AblationRow.methods
    assert [(r.name, tuple(r.methods), r.dynamic) for r in best_config.ablation] == [
        (r.name, tuple(r.methods), r.dynamic) for r in ran.ablation
    ]
    assert best_config.negatives_per_example == ran.negatives_per_example
    assert not ran.reranker.enabled and best_config.reranker.enabled  # the base's setting
    # fold weights are dropped; only the best trial keeps its served model/
    assert not list((out / "trials").glob("*/training/fold-*/*/model"))
    assert [p.parent.name for p in (out / "trials").glob("*/model")] == [str(best)]

    second = tune(base, out, TuneSettings(trials=3, tune_folds=2), run=run)
    assert second.trials == 3 and second.new_trials == 1
    assert [name for name, _ in run.calls] == ["0", "1", "2"]
    assert len(read_csv(out / "trials.csv")) == 3
    done = tune(base, out, TuneSettings(trials=3, tune_folds=2), run=run)
    assert done.new_trials == 0 and len(run.calls) == 3


def test_a_resumed_search_draws_what_an_uninterrupted_one_draws(tmp_path: Path) -> None:
    straight, resumed = FakeRun(), FakeRun()
    tune(base_config(), tmp_path / "a", TuneSettings(trials=4, seed=5), run=straight)
    tune(base_config(), tmp_path / "b", TuneSettings(trials=2, seed=5), run=resumed)
    tune(base_config(), tmp_path / "b", TuneSettings(trials=4, seed=5), run=resumed)
    assert [c.train for _, c in straight.calls] == [c.train for _, c in resumed.calls]


def test_a_killed_trial_is_run_again_with_its_params(tmp_path: Path) -> None:
    out = tmp_path / "tune"
    killed = FakeRun(interrupt_on=1)
    with pytest.raises(KeyboardInterrupt):
        tune(base_config(), out, TuneSettings(trials=3), run=killed)
    interrupted = killed.calls[-1][1]
    run = FakeRun()
    result = tune(base_config(), out, TuneSettings(trials=3), run=run)
    assert result.trials == 3 and result.new_trials == 2
    assert run.calls[0][0] == "2" and run.calls[0][1].train == interrupted.train
    states = {int(r["number"]): r["state"] for r in read_csv(out / "trials.csv")}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE", 3: "COMPLETE"}


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "tune"
    result = tune(base_config(), out, TuneSettings(trials=3), run=FakeRun(fail_on={1}))
    assert result.trials == 3
    rows = {int(r["number"]): r for r in read_csv(out / "trials.csv")}
    assert rows[1]["state"] == "FAIL" and "loss is not finite" in rows[1]["user_attrs_error"]
    assert rows[0]["state"] == rows[2]["state"] == "COMPLETE"


def test_resuming_with_another_config_or_objective_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "tune"
    tune(base_config(), out, TuneSettings(trials=1), run=FakeRun())
    changed = base_config(negatives_per_example=9)
    with pytest.raises(ConfigError, match="created with another config"):
        tune(changed, out, TuneSettings(trials=2), run=FakeRun())
    with pytest.raises(ConfigError, match="created with another objective"):
        tune(base_config(), out, TuneSettings(trials=2, split="test"), run=FakeRun())


def test_foreign_folder_and_busy_folder_are_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="did not write"):
        tune(base_config(), tmp_path, TuneSettings(trials=1), run=FakeRun())
    assert (tmp_path / "notes.txt").read_text() == "mine"
    busy = tmp_path / "busy"
    busy.mkdir()
    with _exclusive(busy), pytest.raises(ConfigError, match="another shopaug tune"):
        tune(base_config(), busy, TuneSettings(trials=1), run=FakeRun())


def test_timeout_stops_before_the_next_trial(tmp_path: Path) -> None:
    run = FakeRun()
    result = tune(base_config(), tmp_path / "t", TuneSettings(trials=5, timeout=1e-9), run=run)
    assert result.timed_out and result.new_trials == 0 and run.calls == []
    assert result.best_config is None


def test_cli_tune_errors() -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["tune", "no-such-config.yaml", "--out", "x", "--trials", "2"])
    assert missing.exit_code == 2 and "neither a profile" in missing.output
    zero = runner.invoke(app, ["tune", "quick", "--out", "x", "--trials", "0"])
    assert zero.exit_code == 2 and "--trials must be an integer >= 1" in zero.output


# --- real trials on the demo data -------------------------------------------------------------

TINY_CONFIG = {
    "name": "tiny",
    "data": "demo",
    "folds": 2,
    "validation_fraction": 0.2,
    "train": {"epochs": 1, "batch_size": 4},
    "ablation": [{"name": "random", "methods": ["random"]}],
    "reranker": {"enabled": False},
}
TINY_SPACE = {"batch_size": [4], "negatives_per_example": [1, 2]}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cli_tune_runs_real_trials_and_resumes(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    out = tmp_path / "tune"
    args = ["tune", str(config), "--out", str(out), "--space", str(space)]
    runner = CliRunner()
    first = runner.invoke(app, [*args, "--trials", "2"])
    assert first.exit_code == 0, first.output
    assert "trial   0 COMPLETE val_ndcg@10" in first.output and "trial   1" in first.output
    assert (out / "optuna.sqlite").exists() and (out / "best.yaml").exists()
    rows = read_csv(out / "trials.csv")
    assert len(rows) == 2 and {r["state"] for r in rows} == {"COMPLETE"}
    for row in rows:
        assert 0.0 <= float(row["value"]) <= 1.0
        metrics = json.loads((out / "trials" / row["number"] / "metrics.json").read_text())
        names = [a["name"] for a in metrics["ablation"]]
        assert metrics["trained_folds"] == 2
        assert names[:4] == ["bm25", "zero-shot", "zero-shot hybrid", "random"]
        random_row = next(a for a in metrics["ablation"] if a["name"] == "random")
        assert float(row["user_attrs_test_ndcg@10"]) == pytest.approx(
            random_row["metrics"]["ndcg@10"]["mean"]
        )
        assert float(row["value"]) == pytest.approx(random_row["validation"]["ndcg@10"])
    best = load_run_config(str(out / "best.yaml"))
    assert [r.name for r in best.ablation] == ["random"] and best.train["batch_size"] == 4
    assert list((out / "samples-cache").glob("random-*.parquet"))  # shared by the trials

    again = runner.invoke(app, [*args, "--trials", "3"])
    assert again.exit_code == 0, again.output
    assert "trial   2" in again.output and "trial   3" not in again.output
    assert len(read_csv(out / "trials.csv")) == 3
    study = optuna.load_study(study_name="shopaug-tiny", storage=f"sqlite:///{out}/optuna.sqlite")
    assert len(study.trials) == 3
