"""The search space of ``shopaug tune`` and the run config one trial trains.

A trial's choices (:class:`TrialChoice`) come from :func:`suggest_choice`, which asks an Optuna
trial for every parameter of a :class:`SearchSpace`; :func:`trial_config` turns them into a
:class:`~shopaug.experiment.config.RunConfig` with a single ablation row, which
:func:`shopaug.experiment.runner.run_experiment` then runs like any other config.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shopaug.augment.pipeline import AUGMENT_METHODS
from shopaug.config import from_mapping, to_mapping
from shopaug.errors import ConfigError
from shopaug.experiment.config import AblationRow, RunConfig

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

#: Optuna parameter names, as they appear in ``trials.csv`` (``params_<name>``).
PARAMETERS = (
    "lr",
    "batch_size",
    "negatives_per_example",
    "temperature",
    "diversity",
    "lambda_div",
    "sources",
    "dynamic_temperature",
)


@dataclass(frozen=True)
class SearchSpace:
    """Ranges and choices of every tuned setting; checked on construction.

    Float ranges are ``(low, high)`` and drawn log-uniformly (so ``low`` must be > 0); equal
    bounds fix the value.

    Attributes:
        lr: peak learning rate (``train.lr``), log-uniform.
        batch_size: training groups per step (``train.batch_size``), categorical.
        negatives_per_example: negatives per training group, an integer range (inclusive).
        temperature: loss temperature (``train.temperature``), log-uniform.
        lambda_div: weight of the bounded diversity term (``train.lambda_div``), log-uniform.
        diversity_optional: also try ``lambda_div = 0`` (a categorical ``diversity`` on/off
            decides first; ``lambda_div`` is only drawn when it is on).
        dynamic_temperature: ``dynamic.temperature``, drawn only for a dynamic source set.
        sources: the sample-source sets to choose from, as ablation rows (name, methods,
            dynamic); empty means the base config's ablation rows.
    """

    lr: tuple[float, float] = (5e-6, 2e-4)
    batch_size: tuple[int, ...] = (8, 16, 32)
    negatives_per_example: tuple[int, int] = (1, 7)
    temperature: tuple[float, float] = (0.02, 0.2)
    lambda_div: tuple[float, float] = (0.01, 1.0)
    diversity_optional: bool = True
    dynamic_temperature: tuple[float, float] = (0.02, 0.5)
    sources: tuple[AblationRow, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name in ("lr", "temperature", "lambda_div", "dynamic_temperature"):
            _check_range(name, getattr(self, name), positive=True)
        _check_range("negatives_per_example", self.negatives_per_example, positive=False)
        if not all(isinstance(n, int) for n in self.negatives_per_example):
            raise ConfigError(
                f"search space: negatives_per_example must be two integers, "
                f"got {list(self.negatives_per_example)}"
            )
        sizes = self.batch_size
        if not sizes or not all(isinstance(s, int) and s >= 1 for s in sizes):
            raise ConfigError(
                f"search space: batch_size must be a non-empty list of integers >= 1, "
                f"got {list(sizes)}"
            )
        if len(set(sizes)) != len(sizes):
            raise ConfigError(f"search space: batch_size lists a size twice: {list(sizes)}")
        names = [row.name for row in self.sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"search space: sources repeat a name: {names}")

    def source_rows(self, base: RunConfig) -> tuple[AblationRow, ...]:
        """The source sets to choose from: :attr:`sources`, else ``base``'s ablation rows."""
        rows = self.sources or tuple(base.ablation)
        if not rows:
            raise ConfigError("search space: no sources to choose from (no ablation rows)")
        names = [row.name for row in rows]
        if len(set(names)) != len(names):
            raise ConfigError(f"config: ablation rows repeat a name: {names}")
        return tuple(rows)

    def as_mapping(self) -> dict[str, Any]:
        """A YAML- and JSON-friendly dict (the form :func:`parse_search_space` reads)."""
        return to_mapping(self)


def _check_range(name: str, bounds: Sequence[Any], *, positive: bool) -> None:
    if len(bounds) != 2:
        raise ConfigError(f"search space: {name} must be [low, high], got {list(bounds)}")
    low, high = bounds
    if not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds):
        raise ConfigError(f"search space: {name} bounds must be numbers, got {list(bounds)}")
    if low > high:
        raise ConfigError(f"search space: {name} needs low <= high, got [{low}, {high}]")
    if positive and low <= 0:
        raise ConfigError(f"search space: {name} is drawn log-uniformly; low must be > 0")
    if not positive and low < 0:
        raise ConfigError(f"search space: {name} low must be >= 0, got {low}")


def parse_search_space(payload: Mapping[str, Any] | None, *, source: str) -> SearchSpace:
    """Build a :class:`SearchSpace` from a mapping (a YAML file); errors name ``source``.

    ``sources`` is a list of ablation rows: ``{name, methods, dynamic}``.
    """
    values = dict(payload or {})
    rows = values.pop("sources", None) or []
    if not isinstance(rows, list):
        raise ConfigError(f"{source}: sources must be a list of {{name, methods, dynamic}}")
    parsed_rows = []
    for number, row in enumerate(rows):
        parsed = from_mapping(AblationRow, row, section=f"{source}: sources[{number}]")
        parsed = dataclasses.replace(parsed, methods=tuple(parsed.methods))
        unknown = [m for m in parsed.methods if m not in AUGMENT_METHODS]
        if unknown or not parsed.methods:
            raise ConfigError(
                f"{source}: sources[{number}] ({parsed.name}): methods must be a non-empty list "
                f"of {', '.join(AUGMENT_METHODS)}; got {list(parsed.methods)}"
            )
        parsed_rows.append(parsed)
    space = from_mapping(SearchSpace, values, section=source)
    return dataclasses.replace(space, sources=tuple(parsed_rows))


@dataclass(frozen=True)
class TrialChoice:
    """The settings one trial trains with.

    Attributes:
        lr: ``train.lr``.
        batch_size: ``train.batch_size``.
        negatives_per_example: ``negatives_per_example``.
        temperature: ``train.temperature``.
        lambda_div: ``train.lambda_div`` (0 when the diversity term is off).
        row: the sample sources (one ablation row).
        dynamic_temperature: ``dynamic.temperature`` for a dynamic row, else ``None``.
    """

    lr: float
    batch_size: int
    negatives_per_example: int
    temperature: float
    lambda_div: float
    row: AblationRow
    dynamic_temperature: float | None = None


def suggest_choice(trial: BaseTrial, space: SearchSpace, base: RunConfig) -> TrialChoice:
    """Ask ``trial`` for every parameter of ``space`` (names in :data:`PARAMETERS`).

    Works with any Optuna trial, ``optuna.trial.FixedTrial`` included, so a trial's stored
    params rebuild its exact choice.
    """
    rows = {row.name: row for row in space.source_rows(base)}
    lr = trial.suggest_float("lr", *space.lr, log=True)
    batch_size = trial.suggest_categorical("batch_size", list(space.batch_size))
    negatives = trial.suggest_int("negatives_per_example", *space.negatives_per_example)
    temperature = trial.suggest_float("temperature", *space.temperature, log=True)
    use_diversity = True
    if space.diversity_optional:
        use_diversity = bool(trial.suggest_categorical("diversity", [False, True]))
    lambda_div = (
        trial.suggest_float("lambda_div", *space.lambda_div, log=True) if use_diversity else 0.0
    )
    name = trial.suggest_categorical("sources", list(rows))
    row = rows[str(name)]
    dynamic_temperature = None
    if row.dynamic:
        dynamic_temperature = trial.suggest_float(
            "dynamic_temperature", *space.dynamic_temperature, log=True
        )
    return TrialChoice(
        lr=float(lr),
        batch_size=int(batch_size),  # type: ignore[arg-type]
        negatives_per_example=int(negatives),
        temperature=float(temperature),
        lambda_div=float(lambda_div),
        row=row,
        dynamic_temperature=dynamic_temperature,
    )


def trial_config(
    base: RunConfig, choice: TrialChoice, *, name: str, train_folds: int | None = None
) -> RunConfig:
    """``base`` with ``choice`` applied and a single ablation row.

    The reranker is switched off (it does not change the bi-encoder's objective and would
    train a second model per fold) and progress bars are off (the tuner reports per trial).

    Args:
        base: the config being tuned (not modified).
        choice: the trial's settings.
        name: the trial config's ``name``.
        train_folds: train only the first N folds (``None``: ``base.train_folds``).
    """
    config = copy.deepcopy(base)
    config.name = name
    config.train = {
        **base.train,
        "lr": choice.lr,
        "batch_size": choice.batch_size,
        "temperature": choice.temperature,
        "lambda_div": choice.lambda_div,
    }
    config.negatives_per_example = choice.negatives_per_example
    config.ablation = [
        AblationRow(choice.row.name, tuple(choice.row.methods), dynamic=choice.row.dynamic)
    ]
    if choice.dynamic_temperature is not None:
        config.dynamic = dataclasses.replace(base.dynamic, temperature=choice.dynamic_temperature)
    config.reranker = dataclasses.replace(base.reranker, enabled=False)
    config.show_progress = False
    if train_folds is not None:
        if not 1 <= train_folds <= base.folds:
            raise ConfigError(f"--tune-folds must be in 1..{base.folds} (the config's folds)")
        config.train_folds = train_folds
    return config
