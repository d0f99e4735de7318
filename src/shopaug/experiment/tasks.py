"""The tasks ``shopaug run`` knows, and how a profile or config file names one.

A config names its task with a top-level ``task:`` key (``search`` when absent). Every task reads
the same kind of YAML, writes the same run directory (``config.yaml``, ``manifest.json``,
``metrics.json``, ``report.html``, ``model/``) and is built on the same layers (data loaders,
encoders, samplers, losses, the training loop, eval, retrieval): a task is a data loader, a task
definition and a profile, not a parallel code base.

To add a task, write a module with ``parse_config(mapping, source)``, ``run(config, out,
command)`` and ``summary_lines(result)`` and register its import path in :data:`TASK_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from shopaug.config import read_yaml
from shopaug.errors import ConfigError

#: task name -> module implementing :class:`TaskModule` (imported only when the task runs).
TASK_MODULES: dict[str, str] = {
    "search": "shopaug.experiment.search_task",
    "recommend": "shopaug.experiment.recommend",
    "ctr": "shopaug.experiment.ctr",
}


class TaskModule(Protocol):
    """What a task module provides."""

    def parse_config(self, mapping: Mapping[str, Any], source: str) -> Any: ...

    def run(self, config: Any, out: Path, command: str) -> dict[str, Any]: ...

    def summary_lines(self, result: Mapping[str, Any]) -> list[str]: ...


@dataclass(frozen=True)
class LoadedTask:
    """A parsed config and the module that runs it."""

    name: str
    module: TaskModule
    config: Any


def profile_names() -> tuple[str, ...]:
    """The profiles that ship with the package (``quick``, ``full``, ...), sorted."""
    folder = resources.files("shopaug.profiles")
    return tuple(
        sorted(
            entry.name.removesuffix(".yaml")
            for entry in folder.iterdir()
            if entry.name.endswith(".yaml")
        )
    )


def read_config(name_or_path: str) -> tuple[dict[str, Any], str]:
    """The mapping of a profile name or a YAML file, and a label for errors."""
    if name_or_path in profile_names():
        import yaml

        text = resources.files("shopaug.profiles").joinpath(f"{name_or_path}.yaml").read_text()
        mapping = yaml.safe_load(text)
        source = f"profile {name_or_path}"
    else:
        path = Path(name_or_path)
        if not path.exists():
            raise ConfigError(
                f"{name_or_path!r} is neither a profile ({', '.join(profile_names())}) "
                "nor a config file"
            )
        mapping = read_yaml(path)
        source = str(path)
    if not isinstance(mapping, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    return mapping, source


def task_module(name: str, *, source: str = "config") -> TaskModule:
    """The module of task ``name``; a clear error for an unknown one."""
    if name not in TASK_MODULES:
        raise ConfigError(
            f"{source}: unknown task {name!r}; expected one of {', '.join(TASK_MODULES)}"
        )
    module: Any = importlib.import_module(TASK_MODULES[name])
    return module  # type: ignore[no-any-return]


def load_task(name_or_path: str) -> LoadedTask:
    """Read a profile or config file, find its task and parse the rest with that task."""
    mapping, source = read_config(name_or_path)
    body = dict(mapping)
    name = body.pop("task", "search")
    if not isinstance(name, str):
        raise ConfigError(f"{source}: task must be a name, got {name!r}")
    module = task_module(name, source=source)
    return LoadedTask(name=name, module=module, config=module.parse_config(body, source))
