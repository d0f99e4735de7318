"""The configuration of ``shopaug run`` and the profiles that ship with the project."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from shopaug.augment.pipeline import AUGMENT_METHODS, AugmentConfig
from shopaug.config import from_mapping, read_yaml
from shopaug.data.records import DEFAULT_TEXT_FIELDS
from shopaug.errors import ConfigError

PROFILES = ("quick", "full")


@dataclass
class AblationRow:
    """One training run of the ablation: which sample sources feed it.

    Attributes:
        name: row label in tables and plots.
        methods: augmentation methods whose samples are pooled (judged positives always).
        dynamic: re-sample negatives from the current model between rounds (IRGAN-style
            generator distribution at ``temperature``), starting from ``methods``' samples.
    """

    name: str
    methods: tuple[str, ...]
    dynamic: bool = False

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)  # YAML gives lists


@dataclass
class DynamicConfig:
    rounds: int = 2
    temperature: float = 0.05
    candidates: int | None = 200


@dataclass
class RerankerConfig:
    enabled: bool = False
    top_k: int = 20
    max_steps: int = 30
    batch_size: int = 16
    lr: float = 3e-5
    negatives_per_example: int = 3


@dataclass
class RunConfig:
    """Everything ``shopaug run`` does, from data to report (see profiles/quick.yaml).

    Attributes:
        name: profile or experiment name.
        data: data set name or folder.
        folds: query-level folds; ``train_folds`` limits how many are trained (None = all).
        validation_fraction: share of each fold's train queries held out for early stopping.
        negatives_per_example: negatives in each training group (besides in-batch ones).
        train: keyword arguments of :class:`shopaug.train.TrainConfig`; ``max_steps`` is the
            budget every ablation row gets.
        augment: sections mining, near_miss, synthetic_queries, generator.
        ablation: the rows to train; the default covers every sample source.
    """

    name: str = "custom"
    data: str = "demo"
    data_dir: str | None = None
    products: str | None = None
    seed: int = 0
    folds: int = 5
    train_folds: int | None = None
    validation_fraction: float = 0.1
    text_fields: tuple[str, ...] = DEFAULT_TEXT_FIELDS
    depth: int = 100
    model: str = "minilm"
    negatives_per_example: int = 3
    train: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)
    ablation: list[AblationRow] = field(default_factory=list)
    dynamic: DynamicConfig = field(default_factory=DynamicConfig)
    reranker: RerankerConfig = field(default_factory=RerankerConfig)
    show_progress: bool = True

    @property
    def augment_config(self) -> AugmentConfig:
        return from_mapping(AugmentConfig, self.augment, section="augment")

    def methods(self) -> list[str]:
        """Every augmentation method some ablation row needs, in a fixed order."""
        needed = {m for row in self.ablation for m in row.methods}
        return [m for m in AUGMENT_METHODS if m in needed]


DEFAULT_ABLATION = [
    AblationRow("random", ("random",)),
    AblationRow("bm25 hard", ("bm25",)),
    AblationRow("dense hard", ("dense",)),
    AblationRow("near-miss", ("random", "near-miss")),
    AblationRow("synthetic queries", ("random", "synthetic-queries")),
    AblationRow("dynamic", ("random",), dynamic=True),
    AblationRow("all", ("bm25", "dense", "near-miss", "synthetic-queries")),
]


def parse_run_config(payload: dict[str, Any], *, source: str) -> RunConfig:
    """Validate a run config mapping (from YAML); errors name the key."""
    payload = dict(payload)
    rows = payload.pop("ablation", None)
    dynamic = payload.pop("dynamic", None)
    reranker = payload.pop("reranker", None)
    config = from_mapping(RunConfig, payload, section=source)
    if rows is None:
        config.ablation = list(DEFAULT_ABLATION)
    else:
        config.ablation = []
        for number, row in enumerate(rows):
            parsed = from_mapping(AblationRow, row, section=f"{source}: ablation[{number}]")
            unknown = [m for m in parsed.methods if m not in AUGMENT_METHODS]
            if unknown:
                raise ConfigError(
                    f"{source}: ablation[{number}] ({parsed.name}): unknown method(s) {unknown}; "
                    f"expected {', '.join(AUGMENT_METHODS)}"
                )
            config.ablation.append(parsed)
    config.dynamic = from_mapping(DynamicConfig, dynamic, section=f"{source}: dynamic")
    config.reranker = from_mapping(RerankerConfig, reranker, section=f"{source}: reranker")
    if config.folds < 2:
        raise ConfigError(f"{source}: folds must be at least 2")
    if not 0 < config.validation_fraction < 1:
        raise ConfigError(f"{source}: validation_fraction must be in (0, 1)")
    config.augment_config  # noqa: B018 - validates the section names early
    return config


def load_run_config(name_or_path: str) -> RunConfig:
    """A profile name (``quick``, ``full``) or a YAML file."""
    if name_or_path in PROFILES:
        text = resources.files("shopaug.profiles").joinpath(f"{name_or_path}.yaml").read_text()
        import yaml

        return parse_run_config(yaml.safe_load(text), source=f"profile {name_or_path}")
    path = Path(name_or_path)
    if not path.exists():
        raise ConfigError(
            f"{name_or_path!r} is neither a profile ({', '.join(PROFILES)}) nor a config file"
        )
    return parse_run_config(read_yaml(path), source=str(path))
