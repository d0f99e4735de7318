"""Typed configuration loaded from YAML: each section becomes the config dataclass of its stage.

Unknown keys are errors that name the section and the key, so a typo never silently falls back to
a default. Values are plain YAML; nothing is evaluated.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from shopaug.errors import ConfigError

T = TypeVar("T")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        payload = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(payload, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return payload


def from_mapping(cls: type[T], values: Mapping[str, Any] | None, *, section: str) -> T:
    """Build dataclass ``cls`` from ``values``; unknown keys and bad types are ConfigErrors."""
    if values is None:
        return cls()
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"config section '{section}' must be a mapping, got {type(values).__name__}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"config section '{section}': unknown key(s) {', '.join(unknown)}; "
            f"known keys: {', '.join(sorted(fields))}"
        )
    converted = {}
    for key, value in values.items():
        default = fields[key].default
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        converted[key] = value
    try:
        return cls(**converted)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"config section '{section}': {error}") from error


#: The stages whose random choices the run seed drives (recorded in ``manifest.json``).
SEEDED_STAGES = ("folds", "validation", "samples", "training", "reranker", "bootstrap")


def seeded(section: Mapping[str, Any] | None, seed: int, *, name: str) -> dict[str, Any]:
    """``section`` with the run's ``seed``: the one place a stage gets its seed.

    Every stage takes the run's seed; the streams stay apart because each stage draws from
    ``numpy.random.default_rng([seed, ...its own key...])``. A section may repeat the run's
    seed but not set another one (it used to win silently in some stages and lose in others).

    Raises:
        ConfigError: ``section`` sets a different seed; the message names the section.
    """
    values = dict(section or {})
    own = values.get("seed")
    if own is not None and own != seed:
        raise ConfigError(
            f"config section '{name}': seed {own!r} differs from the run's seed {seed}; every "
            "stage's seed is the run's `seed` (remove it from the section, or set the run's)"
        )
    values["seed"] = seed
    return values


def stage_seeds(seed: int) -> dict[str, int]:
    """The seed of each stage of a run (:data:`SEEDED_STAGES`), for ``manifest.json``."""
    return {"run": seed, **{stage: seed for stage in SEEDED_STAGES}}


def apply_overrides(config: T, overrides: Mapping[str, Any], *, source: str = "override") -> T:
    """Set the fields of dataclass ``config`` named in ``overrides``; ``None`` values are skipped.

    This is how command-line options override a loaded config: an option the user did not give
    is ``None`` and leaves the config's value alone. Paths and enum members are stored as
    text, as YAML would give them. ``config`` is changed in place and returned.

    Args:
        config: a dataclass instance.
        overrides: field name -> new value (``None``: keep the config's value).
        source: where the overrides come from, for errors.

    Raises:
        ConfigError: if a key with a value is not a field of ``config`` (naming the known
            fields).

    Example:
        >>> @dataclasses.dataclass
        ... class Run:
        ...     seed: int = 0
        ...     data: str = "demo"
        >>> apply_overrides(Run(), {"seed": 3, "data": None})
        Run(seed=3, data='demo')
    """
    fields = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    given = {key: value for key, value in overrides.items() if value is not None}
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ConfigError(
            f"{source}: unknown setting(s) {', '.join(unknown)} for {type(config).__name__}; "
            f"known: {', '.join(sorted(fields))}"
        )
    for key, value in given.items():
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, Path):
            value = str(value)
        setattr(config, key, value)
    return config


def to_mapping(config: Any) -> dict[str, Any]:
    """A dataclass as a YAML-friendly dict (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}
