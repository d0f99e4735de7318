"""`shopaug run` finds a config's task by its top-level `task:` key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shopaug.errors import ConfigError
from shopaug.experiment.config import RunConfig, load_run_config
from shopaug.experiment.tasks import load_task, profile_names, read_config


def test_shipped_profiles_are_found_by_name() -> None:
    names = profile_names()
    assert {"quick", "full"} <= set(names)
    mapping, source = read_config("quick")
    assert source == "profile quick"
    assert mapping["name"] == "quick"


def test_a_config_without_task_is_search(tmp_path: Path) -> None:
    task = load_task("quick")
    assert task.name == "search"
    assert isinstance(task.config, RunConfig)
    assert task.config.name == "quick"


def test_explicit_search_task_parses_like_the_default(tmp_path: Path) -> None:
    mapping, _ = read_config("quick")
    path = tmp_path / "explicit.yaml"
    path.write_text(yaml.safe_dump({"task": "search", **mapping}))
    assert load_task(str(path)).config == load_task("quick").config


def test_unknown_task_names_the_file_and_the_known_tasks(tmp_path: Path) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text("task: weather\nname: x\n")
    with pytest.raises(
        ConfigError, match=r"odd.yaml: unknown task 'weather'; expected one of .*search"
    ):
        load_task(str(path))


def test_search_loader_refuses_another_task(tmp_path: Path) -> None:
    path = tmp_path / "other.yaml"
    path.write_text("task: recommend\nname: x\n")
    with pytest.raises(ConfigError, match="needs a search config"):
        load_run_config(str(path))


def test_missing_config_names_the_profiles() -> None:
    with pytest.raises(ConfigError, match=r"neither a profile .*quick"):
        load_task("no-such-profile-or-file.yaml")


def test_a_config_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError):
        load_task(str(path))
