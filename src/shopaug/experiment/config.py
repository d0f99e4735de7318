"""The configuration of ``shopaug run`` and the profiles that ship with the project."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from shopaug.augment.pipeline import AUGMENT_METHODS, AugmentConfig
from shopaug.config import from_mapping, seeded
from shopaug.data.records import DEFAULT_TEXT_FIELDS
from shopaug.errors import ConfigError

TOWERS = ("query", "full")
RERANKER_KINDS = ("cross-encoder", "lambdamart")
DEVICES = ("cpu", "cuda", "auto")
ENGINES = ("local", "ray")
TRAINERS = ("shopaug", "sentence-transformers")


@dataclass
class AblationRow:
    """One training run of the ablation: which sample sources feed it.

    Attributes:
        name: row label in tables and plots.
        methods: augmentation methods whose samples are pooled (judged positives always).
        dynamic: re-sample negatives from the current model before every epoch after the
            first (IRGAN-style generator distribution at ``temperature``), starting from
            ``methods``' samples.
        augment: settings merged over the run's ``augment`` sections for this row's samples
            (e.g. another ``generator``); rows with the same methods and settings share samples.
        sampler: a :class:`shopaug.samplers.SamplerConfig` mapping (``name: uniform`` or
            ``popularity``): every training step also draws ``sampled_negatives`` catalog
            negatives per group through it (popularity counted on the fold's training queries),
            with the logQ correction when ``log_q_correction`` (``tower: full`` only).
        trainer: ``shopaug`` (:func:`shopaug.train.fit`, or the query-tower loop) or
            ``sentence-transformers``: the library's own trainer and
            ``MultipleNegativesRankingLoss`` on one (query, positive, negative) triple per
            positive, the last epoch kept (:mod:`shopaug.train.st_trainer`), the fine-tune a
            user writes without shopaug and the yardstick of every other row.
    """

    name: str
    methods: tuple[str, ...]
    dynamic: bool = False
    augment: dict[str, Any] = field(default_factory=dict)
    sampler: dict[str, Any] = field(default_factory=dict)
    sampled_negatives: int = 4
    log_q_correction: bool = False
    trainer: str = "shopaug"

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)  # YAML gives lists

    def cache_key(self) -> dict[str, Any]:
        """What the row's trained results depend on; a row without a sampler is keyed as
        before sampler rows existed, so finished runs keep their cached rows."""
        key = dataclasses.asdict(self)
        if self.trainer == "shopaug":
            key.pop("trainer")
        if not self.sampler:
            for name in ("sampler", "sampled_negatives", "log_q_correction"):
                key.pop(name)
        return key

    @property
    def kind(self) -> str:
        """``fine-tune`` when the row trains on judged samples only (what a shop does without
        shopaug), else ``augmented``."""
        judged = {"positives", "human-negatives"}
        return "fine-tune" if set(self.methods) <= judged and not self.dynamic else "augmented"


@dataclass
class DynamicConfig:
    """Dynamic negatives: drawn from the current model's scores over ``candidates`` top items
    at ``temperature``; ``negatives`` per query."""

    temperature: float = 0.05
    candidates: int | None = 200
    negatives: int = 8


@dataclass
class FusionConfig:
    """Each trained bi-encoder fused with BM25: reciprocal-rank fusion, and a convex
    combination of min-max normalised scores whose weight on the dense side is picked from
    ``weights`` on the validation queries."""

    enabled: bool = True
    depth: int = 200
    rrf_k: float = 60.0
    weights: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)

    def __post_init__(self) -> None:
        self.weights = tuple(float(w) for w in self.weights)


@dataclass
class RerankerConfig:
    """A reranker trained on the training queries' graded judgments, reranking the top
    ``top_k`` of the best first stage: ``kind: cross-encoder`` (all-MiniLM-L6-v2 with a new
    scoring head, ``epochs`` over judged positives, judged negatives and the first stage's
    augmented negatives) or ``kind: lambdamart`` (LightGBM lambdarank with ``trees`` trees of
    ``leaves`` leaves over candidate features, :mod:`shopaug.retrieval.rerank_features`).
    ``lora`` (a :class:`~shopaug.train.config.LoraConfig` mapping, e.g. ``{r: 8}``) trains
    LoRA adapters and the head of the cross-encoder instead of every weight."""

    enabled: bool = False
    kind: str = "cross-encoder"
    top_k: int = 50
    trees: int = 300
    leaves: int = 15
    epochs: int = 2
    batch_size: int = 16
    lr: float = 3e-5
    negatives_per_example: int = 3
    max_positives_per_query: int = 16
    lora: dict[str, Any] | None = None

    def cache_key(self) -> dict[str, Any]:
        """What a trained reranker depends on; without LoRA keyed as before LoRA existed, so
        finished runs keep their cached rerankers."""
        key = dataclasses.asdict(self)
        if self.lora is None:
            key.pop("lora")
        return key


@dataclass
class RunConfig:
    """Everything ``shopaug run`` does, from data to report (see profiles/quick.yaml).

    Attributes:
        name: profile or experiment name.
        data: data set name or folder.
        folds: query-level folds; ``train_folds`` limits how many are trained (None = all).
        validation_fraction: share of each fold's train queries held out for early stopping.
        negatives_per_example: negatives in each training group of a ``full`` tower.
        tower: ``query`` fine-tunes the query encoder against the frozen base model's cached
            catalog vectors (one encoding per query and epoch: minutes on two cores); ``full``
            fine-tunes both sides (the catalog is re-encoded for every model).
        item_adapter: with ``tower: query``, also train a linear map over the frozen item
            vectors (identity at the start).
        gain_weights: a positive's weight in the loss is its judged gain (Exact 2, Partial 1).
        train: keyword arguments of :class:`shopaug.train.TrainConfig`. Every row gets the
            same ``epochs`` (passes over its samples), early-stopped on validation queries;
            ``lora: {r: 8}`` trains LoRA adapters of the (query) encoder instead of every
            weight (:class:`shopaug.train.config.LoraConfig`).
        augment: sections mining, near_miss, synthetic_queries, generator.
        ablation: the rows to train; the default covers every sample source.
        device: torch device for training and encoding (``cpu``, ``cuda``, ``auto``).
        tracking: keyword arguments of :class:`shopaug.train.config.TrackingConfig`
            (``backend: tensorboard | mlflow | none``, ``uri``, ``experiment``).
        engine: ``local`` (this process) or ``ray``: samples are made through Ray Data over
            catalog and query shards (see :mod:`shopaug.scale`), with the same results.
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
    tower: str = "query"
    item_adapter: bool = False
    gain_weights: bool = True
    device: str = "cpu"
    train: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)
    ablation: list[AblationRow] = field(default_factory=list)
    dynamic: DynamicConfig = field(default_factory=DynamicConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    reranker: RerankerConfig = field(default_factory=RerankerConfig)
    show_progress: bool = True
    tracking: dict[str, Any] = field(default_factory=dict)
    engine: str = "local"

    @property
    def tracking_config(self) -> Any:
        """The ``tracking`` section as a :class:`shopaug.train.config.TrackingConfig`."""
        from pydantic import ValidationError

        from shopaug.train.config import TrackingConfig

        try:
            return TrackingConfig(**self.tracking)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'tracking'}: {e['msg']}" for e in error.errors()
            )
            raise ConfigError(f"tracking: {problems}") from error

    @property
    def augment_config(self) -> AugmentConfig:
        return from_mapping(AugmentConfig, self.augment, section="augment")

    def methods(self) -> list[str]:
        """Every augmentation method some ablation row needs, in a fixed order."""
        needed = {m for row in self.ablation for m in row.methods}
        return [m for m in AUGMENT_METHODS if m in needed]

    def row_augment(self, row: AblationRow) -> dict[str, Any]:
        """The augment sections of ``row``: the run's, with the row's settings merged in."""
        merged = {section: dict(values) for section, values in self.augment.items()}
        for section, values in row.augment.items():
            merged[section] = {**merged.get(section, {}), **dict(values)}
        return merged


DEFAULT_ABLATION = [
    AblationRow("plain fine-tune", ("positives",)),
    AblationRow("human negatives", ("human-negatives",)),
    AblationRow("random", ("random",)),
    AblationRow("popular", ("popular",)),
    AblationRow("bm25 hard", ("bm25",)),
    AblationRow("dense hard", ("dense",)),
    AblationRow("hybrid hard", ("hybrid",)),
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
    fusion = payload.pop("fusion", None)
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
    config.fusion = from_mapping(FusionConfig, fusion, section=f"{source}: fusion")
    config.reranker = from_mapping(RerankerConfig, reranker, section=f"{source}: reranker")
    if config.reranker.kind not in RERANKER_KINDS:
        raise ConfigError(
            f"{source}: reranker.kind must be one of {RERANKER_KINDS}, got {config.reranker.kind!r}"
        )
    if config.tower not in TOWERS:
        raise ConfigError(f"{source}: tower must be one of {TOWERS}, got {config.tower!r}")
    if config.device not in DEVICES:
        raise ConfigError(f"{source}: device must be one of {DEVICES}, got {config.device!r}")
    if config.engine not in ENGINES:
        raise ConfigError(f"{source}: engine must be one of {ENGINES}, got {config.engine!r}")
    if not isinstance(config.tracking, dict):
        raise ConfigError(f"{source}: tracking must be a mapping, got {config.tracking!r}")
    try:
        config.tracking_config  # noqa: B018 - validates the section early
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from error
    names = [row.name for row in config.ablation]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: ablation row names must be unique, got {names}")
    for row in config.ablation:
        if row.trainer not in TRAINERS:
            raise ConfigError(
                f"{source}: ablation row {row.name!r}: trainer must be one of {TRAINERS}, "
                f"got {row.trainer!r}"
            )
        if row.trainer == "sentence-transformers" and (
            config.tower != "full" or row.sampler or row.dynamic
        ):
            raise ConfigError(
                f"{source}: ablation row {row.name!r} (trainer: sentence-transformers) trains "
                "both towers on its samples as they are: it needs tower: full and no sampler "
                "or dynamic negatives"
            )
        if not row.sampler:
            continue
        if config.tower != "full":
            raise ConfigError(
                f"{source}: ablation row {row.name!r} draws negatives through a sampler, which "
                "needs tower: full"
            )
        from shopaug.samplers import SamplerConfig

        from_mapping(SamplerConfig, row.sampler, section=f"{source}: {row.name}: sampler")
        if row.sampled_negatives < 1:
            raise ConfigError(f"{source}: {row.name}: sampled_negatives must be at least 1")
    if not isinstance(config.train, dict):
        raise ConfigError(f"{source}: train must be a mapping, got {config.train!r}")
    train = train_settings(config.train, seed=config.seed, section=f"{source}: train")
    if train.privacy.enabled and (config.tower != "query" or config.item_adapter):
        raise ConfigError(
            f"{source}: train.privacy (DP-SGD) needs tower: query and item_adapter: false; "
            f"got tower {config.tower!r}, item_adapter {config.item_adapter}"
        )
    if config.reranker.lora is not None:
        lora_settings(config.reranker.lora, section=f"{source}: reranker.lora")
    if config.folds < 2:
        raise ConfigError(f"{source}: folds must be at least 2")
    if not 0 < config.validation_fraction < 1:
        raise ConfigError(f"{source}: validation_fraction must be in (0, 1)")
    config.augment_config  # noqa: B018 - validates the section names early
    return config


def _problems(error: Any) -> str:
    """A pydantic ValidationError as ``field: message (got value)`` items."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or '(section)'}: {e['msg']} (got {e.get('input')!r})"
        for e in error.errors()
    )


def train_settings(values: dict[str, Any], *, seed: int, section: str = "train") -> Any:
    """A ``train`` section as a :class:`~shopaug.train.config.TrainConfig` seeded with the
    run's seed (:func:`shopaug.config.seeded`: a different seed in the section is an error);
    errors name the section and the field."""
    import pydantic

    from shopaug.train.config import TrainConfig

    try:
        return TrainConfig(**seeded(values, seed, name=section))
    except pydantic.ValidationError as error:
        raise ConfigError(f"config section '{section}': {_problems(error)}") from error


def lora_settings(values: dict[str, Any] | None, *, section: str) -> Any:
    """A ``lora`` mapping as a :class:`~shopaug.train.config.LoraConfig` (None: no LoRA)."""
    import pydantic

    from shopaug.train.config import LoraConfig

    if values is None:
        return None
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{section}' must be a mapping, got {values!r}")
    try:
        return LoraConfig(**values)
    except pydantic.ValidationError as error:
        raise ConfigError(f"config section '{section}': {_problems(error)}") from error


def load_run_config(name_or_path: str) -> RunConfig:
    """A search profile name (``quick``, ``full``) or a YAML file (see ``experiment.tasks``)."""
    from shopaug.experiment.tasks import read_config

    mapping, source = read_config(name_or_path)
    body = dict(mapping)
    task = body.pop("task", "search")
    if task != "search":
        raise ConfigError(f"{source}: this command needs a search config, got task {task!r}")
    return parse_run_config(body, source=source)
