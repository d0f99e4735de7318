"""What the training loop consumes: training groups and a typed configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


@dataclass(frozen=True)
class TrainingExample:
    """One training group: a query, its positive text and its negative texts.

    The loop works on texts, never ids: the caller builds these from ``samples.parquet`` (or any
    other source) so the loop does not know where the data came from.

    Attributes:
        query: Query text.
        positive: Text of the relevant item.
        negatives: Texts of non-relevant items (may be empty when in-batch negatives are used).
        weight: Weight of this group in the loss (>= 0).
    """

    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.query, str) or not self.query:
            raise ValueError(f"TrainingExample.query must be a non-empty str, got {self.query!r}")
        if not isinstance(self.positive, str) or not self.positive:
            raise ValueError(
                f"TrainingExample.positive must be a non-empty str, got {self.positive!r}"
            )
        if not all(isinstance(text, str) for text in self.negatives):
            raise ValueError("TrainingExample.negatives must be a list of str")
        if not self.weight >= 0:
            raise ValueError(f"TrainingExample.weight must be >= 0, got {self.weight!r}")


class PrivacyConfig(BaseModel):
    """Differential privacy of a query-tower fine-tune: DP-SGD through Opacus
    (:func:`shopaug.train.dp.fit_query_groups_private`).

    The protected unit is one training query group (a query with its positives and negatives).
    Each group is scored against its own negatives only: in-batch negatives would make one
    group's gradient depend on another group's items, and DP-SGD bounds each example's
    gradient on its own. See docs/privacy.md.

    Attributes:
        enabled: Train with DP-SGD (``tower: query`` without an item adapter only).
        target_epsilon: Calibrate the noise so that the planned steps spend this epsilon at
            ``delta``; give this or ``noise_multiplier``.
        noise_multiplier: Gaussian noise standard deviation over ``max_grad_norm``, set
            directly (the epsilon is then what the accountant reports).
        delta: The delta of (epsilon, delta)-DP; keep it below 1 / training queries.
        max_grad_norm: Each example's gradient is clipped to this L2 norm.
        accountant: Opacus accountant: ``rdp`` (Rényi DP) or ``prv`` (privacy random
            variables, tighter).
        trainable_layers: Train the top this many transformer layers of the query encoder
            (token, position and type embeddings stay frozen); ``None``: every layer. Fewer
            parameters mean less noise in total and per-example gradients that fit in memory.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    target_epsilon: float | None = Field(default=None, gt=0)
    noise_multiplier: float | None = Field(default=None, ge=0)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    accountant: Literal["rdp", "prv"] = "rdp"
    trainable_layers: int | None = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _one_noise_setting(self) -> PrivacyConfig:
        if self.enabled and (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError(
                "privacy: give exactly one of target_epsilon (noise calibrated to it) or "
                "noise_multiplier"
            )
        return self


class LoraConfig(BaseModel):
    """LoRA adapters (through ``peft``) in place of full fine-tuning: the ``lora`` entry of a
    ``train`` section (and of ``reranker``); the model is built with them
    (:class:`~shopaug.models.lora.LoraSettings`), and only the adapters train.

    Attributes:
        r: Rank of each adapter's update (``B A`` with ``A`` of shape ``(r, in)``).
        alpha: Scale numerator, the update is multiplied by ``alpha / r``; ``None``: ``2 r``.
        dropout: Dropout on the adapters' input.
        target_modules: Names of the linear layers that get adapters (BERT attention:
            ``query``, ``value``; ``key`` and ``dense`` are the others).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(default=8, ge=1)
    alpha: int | None = Field(default=None, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    target_modules: tuple[str, ...] = Field(default=("query", "value"), min_length=1)

    @model_validator(mode="after")
    def _named_modules(self) -> LoraConfig:
        if not all(name.strip() for name in self.target_modules):
            raise ValueError(f"lora.target_modules holds an empty name: {self.target_modules}")
        return self

    def settings(self, seed: int) -> Any:
        """The :class:`~shopaug.models.lora.LoraSettings` a model is built with."""
        from shopaug.models.lora import LoraSettings

        return LoraSettings(
            r=self.r,
            alpha=self.alpha,
            dropout=self.dropout,
            target_modules=self.target_modules,
            seed=seed,
        )


class TrackingConfig(BaseModel):
    """Where training metrics, the run directory and the served model are recorded
    (:mod:`shopaug.train.tracking`); the ``tracking:`` section of a run config.

    It changes no result: stage caches and checkpoints ignore it.

    Attributes:
        backend: ``tensorboard`` (event files under each training folder's ``tb/``),
            ``mlflow`` (one MLflow run per ``shopaug run``, a nested run per training, the run
            directory and the served model at the end; needs ``shopaug[tracking]``) or
            ``none``. ``curve.jsonl`` is written in every case.
        uri: MLflow tracking URI; ``None``: a SQLite store in the run directory
            (``sqlite:///RUN_DIR/mlflow/mlflow.db``, artifacts under ``RUN_DIR/mlflow/``).
        experiment: MLflow experiment name.
        log_artifacts: Copy the run directory (without ``cache/`` and the store itself) into
            the MLflow run at the end.
        log_model: Log the served model as an MLflow pyfunc model with its signature.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["tensorboard", "mlflow", "none"] = "tensorboard"
    uri: str | None = None
    experiment: str = Field(default="shopaug", min_length=1)
    log_artifacts: bool = True
    log_model: bool = True


class TrainConfig(BaseModel):
    """Hyper-parameters of :func:`shopaug.train.fit`; every field is checked on construction.

    Attributes:
        optimizer: ``adam``, ``adamw`` or ``sgd`` (SGD uses momentum 0.9).
        lr: Peak learning rate.
        weight_decay: Weight decay (decoupled for AdamW, L2 for Adam and SGD).
        batch_size: Training groups per step.
        epochs: Passes over the data.
        max_steps: Stop after this many optimizer steps (caps ``epochs``); it also sets the
            length of the learning-rate schedule.
        warmup_ratio: Fraction of the steps with a linear warm-up from 0; then linear decay to
            0 at the last step.
        grad_clip: Clip the global gradient norm to this value; ``None`` or 0 disables it.
        loss: Ranking loss name, a key of :data:`shopaug.losses.LOSSES` (not ``diversity``).
        temperature: Scores are divided by this before every loss (0.05 suits cosine scores).
        lambda_div: Weight of the bounded diversity term; 0 turns it off.
        seed: Seeds the data order (one seeded permutation per epoch) and the RNGs.
        eval_every: Call ``validate`` every this many steps; ``None``: at the end of each epoch.
            The last step is always evaluated.
        checkpoint_every: Checkpoint every this many steps; ``None``: at the end of each epoch.
            The last step always writes one.
        keep_checkpoints: How many of the newest checkpoints to keep.
        early_stopping_patience: Stop after this many evaluations without improvement;
            ``None`` disables early stopping.
        min_delta: Smallest increase of the metric that counts as an improvement.
        in_batch_negatives: Also use the other groups' positives and negatives of the batch
            as negatives (as sentence-transformers' ``MultipleNegativesRankingLoss`` does).
        metric_name: Name under which the ``validate`` value is logged.
        log_every: Add a curve point every this many steps (besides evaluation steps).
        max_seq_length: Training inputs are truncated at this many tokens (special tokens
            included, at most the model's own maximum); ``None``: sized from the data, the
            smallest length that leaves ``sequence_length_coverage`` of the training texts
            untruncated. Only models that tokenise
            (:class:`~shopaug.train.trainable.SequenceLengthModel`) use it.
        sequence_length_coverage: Share of training texts that a data-sized
            ``max_seq_length`` keeps whole.
        length_buckets: Put groups of similar total text length into the same batch (less
            padding, faster on CPU); the order stays a function of ``(seed, epoch)``.
        no_duplicates: Never put two groups that share a text (query, positive or negative)
            into one batch, as sentence-transformers' ``BatchSamplers.NO_DUPLICATES`` does: a
            query with many positives then spreads over many batches, and no batch scores one
            of a query's products against its own copy (see
            :func:`shopaug.train.loop.epoch_batches`). Cannot be combined with
            ``length_buckets`` (which packs the groups of one query into one batch).
        num_threads: Torch CPU threads; ``None``: one per core available to the process.
        privacy: Differential privacy (DP-SGD) settings; off by default.
        lora: Train LoRA adapters (:class:`LoraConfig`) instead of every weight; ``None``
            (the default): full fine-tuning. The model must be built with them (the
            experiment does; :func:`shopaug.train.fit` refuses a model without adapters).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(default=2e-5, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    batch_size: int = Field(default=32, ge=1)
    epochs: int = Field(default=1, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    grad_clip: float | None = Field(default=1.0, ge=0)
    loss: Literal["bce", "infonce", "bpr"] = "infonce"
    temperature: float = Field(default=0.05, gt=0)
    lambda_div: float = Field(default=0.0, ge=0)
    seed: int = 0
    eval_every: int | None = Field(default=None, ge=1)
    checkpoint_every: int | None = Field(default=None, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    early_stopping_patience: int | None = Field(default=None, ge=1)
    min_delta: float = Field(default=0.0, ge=0)
    in_batch_negatives: bool = True
    metric_name: str = "val_ndcg@10"
    log_every: int = Field(default=10, ge=1)
    max_seq_length: int | None = Field(default=None, ge=1)
    sequence_length_coverage: float = Field(default=0.99, gt=0, le=1)
    length_buckets: bool = False
    no_duplicates: bool = False
    num_threads: int | None = Field(default=None, ge=1)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    lora: LoraConfig | None = None

    @model_validator(mode="after")
    def _one_batch_order(self) -> TrainConfig:
        if self.length_buckets and self.no_duplicates:
            raise ValueError(
                "length_buckets and no_duplicates together are not supported: buckets pack "
                "the groups of one query into the same batch; choose one"
            )
        return self

    @model_validator(mode="after")
    def _lora_without_privacy(self) -> TrainConfig:
        if self.lora is not None and self.privacy.enabled:
            raise ValueError(
                "lora and privacy together are not supported: DP-SGD trains the top layers "
                "of the query encoder (privacy.trainable_layers); drop one of them"
            )
        return self
