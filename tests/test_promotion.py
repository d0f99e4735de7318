"""Champion/challenger decisions and the atomic model swap."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from shopaug.errors import ConfigError
from shopaug.models.registry import (
    CURRENT,
    activate_model,
    model_versions,
    resolve_model_dir,
)
from shopaug.online.gate import decide, promote_model
from shopaug.online.loop import gate_and_promote


def model(directory: Path, marker: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "weights.txt").write_text(marker)
    return directory


def test_better_challenger_is_promoted() -> None:
    decision = decide(np.array([0.5, 0.4, 0.6, 0.3]), np.array([0.6, 0.5, 0.7, 0.3]))
    assert decision.promote
    assert decision.mean_delta == pytest.approx(0.075)
    assert decision.queries == 4
    assert 0 < decision.p_value < 0.1
    assert "better" in decision.reason


def test_worse_beyond_tolerance_is_refused() -> None:
    champion = np.array([0.5, 0.6, 0.7, 0.8])
    decision = decide(champion, champion - 0.01, tolerance=0.005)
    assert not decision.promote
    assert decision.mean_delta == pytest.approx(-0.01)
    assert decision.p_value == 0.0  # every query lost the same amount
    assert "keep the champion" in decision.reason


def test_worse_within_tolerance_is_promoted() -> None:
    champion = np.array([0.5, 0.6, 0.7, 0.8])
    challenger = champion + np.array([-0.004, -0.002, -0.004, -0.002])
    decision = decide(champion, challenger, tolerance=0.005)
    assert decision.promote
    assert decision.mean_delta == pytest.approx(-0.003)


def test_identical_metrics_are_promoted_with_p_one() -> None:
    same = np.array([0.2, 0.9])
    decision = decide(same, same.copy())
    assert decision.promote
    assert decision.mean_delta == 0.0
    assert decision.p_value == 1.0


@pytest.mark.parametrize(
    ("champion", "challenger", "message"),
    [
        (np.array([0.1, 0.2]), np.array([0.1]), "same queries"),
        (np.array([]), np.array([]), "no queries"),
        (np.array([0.1, np.nan]), np.array([0.1, 0.2]), "NaN"),
        (np.ones((2, 2)), np.ones((2, 2)), "1-D"),
    ],
)
def test_bad_metric_arrays_are_refused(
    champion: np.ndarray, challenger: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        decide(champion, challenger)


def test_promote_swaps_pointer_and_keeps_every_version(tmp_path: Path) -> None:
    run = tmp_path / "run"
    trained = model(run / "model", "trained")
    assert resolve_model_dir(run / CURRENT) == trained.resolve()  # fallback before promotions
    first = promote_model(run, model(tmp_path / "cand-a", "a"))
    assert first == (run / "models" / "v0001-cand-a").resolve()
    assert resolve_model_dir(run / CURRENT) == first
    second = promote_model(run, model(tmp_path / "cand-b", "b"))
    assert resolve_model_dir(run / CURRENT) == second
    assert (second / "weights.txt").read_text() == "b"
    # Nothing was deleted: the trained model, both sources, the first promoted version.
    assert (trained / "weights.txt").read_text() == "trained"
    assert (tmp_path / "cand-a" / "weights.txt").exists()
    assert (first / "weights.txt").read_text() == "a"
    assert model_versions(run) == [first, second]
    history = [json.loads(line) for line in (run / "promotions.jsonl").read_text().splitlines()]
    assert [h["new"] for h in history] == [str(first), str(second)]
    assert history[1]["previous"] == str(first)
    leftovers = [p.name for p in run.iterdir() if p.name.startswith(".")]
    leftovers += [p.name for p in (run / "models").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_pointer_is_a_relative_symlink_so_the_run_can_move(tmp_path: Path) -> None:
    run = tmp_path / "run"
    promoted = promote_model(run, model(tmp_path / "m", "x"))
    assert os.readlink(run / CURRENT) == os.path.join("models", promoted.name)
    moved = tmp_path / "moved"
    run.rename(moved)
    assert (resolve_model_dir(moved / CURRENT) / "weights.txt").read_text() == "x"


def test_pointer_file_is_read(tmp_path: Path) -> None:
    target = model(tmp_path / "models" / "v0001-x", "x")
    (tmp_path / CURRENT).write_text("models/v0001-x\n")
    assert resolve_model_dir(tmp_path / CURRENT) == target.resolve()


def test_a_real_directory_is_never_replaced_by_a_pointer(tmp_path: Path) -> None:
    users = model(tmp_path / CURRENT, "mine")
    with pytest.raises(ConfigError, match="not a pointer"):
        activate_model(users, model(tmp_path / "other", "o"))
    assert (users / "weights.txt").read_text() == "mine"


def test_missing_model_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model_dir(tmp_path / CURRENT)
    with pytest.raises(ConfigError, match="not a directory"):
        promote_model(tmp_path, tmp_path / "nope")


def test_gate_and_promote_moves_the_pointer_only_when_the_gate_says_so(tmp_path: Path) -> None:
    run = tmp_path / "run"
    trained = model(run / "model", "trained")
    challenger = model(tmp_path / "challenger", "c")
    champion = np.array([0.5, 0.6, 0.7])
    refused = gate_and_promote(run, challenger, champion, champion - 0.1)
    assert not refused.promote
    assert resolve_model_dir(run / CURRENT) == trained.resolve()
    accepted = gate_and_promote(run, challenger, champion, champion + 0.1)
    assert accepted.promote
    assert (resolve_model_dir(run / CURRENT) / "weights.txt").read_text() == "c"
