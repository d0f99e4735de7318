"""The training loop: optimiser, warm-up + linear decay, early stopping, checkpoints, resume.

Why one module of this length: ``fit`` and the state its exact resume checkpoints; splitting
them would spread one checkpointed state over several modules.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from shopaug.errors import ConfigError
from shopaug.losses import LOSSES, DiversityLoss, TotalLoss
from shopaug.models.lora import has_lora
from shopaug.models.tokens import length_covering
from shopaug.train.checkpoint import (
    checkpoint_root,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from shopaug.train.config import TrainConfig, TrainingExample
from shopaug.train.data_parallel import DataParallelGroup
from shopaug.train.sampling import NegativeSampling, SampledBatch
from shopaug.train.tracking import MetricsLogger, append_curve, default_logger, write_curve
from shopaug.train.trainable import (
    TRAINABLE_MODELS,
    EmbeddingModel,
    PairScoringModel,
    SequenceLengthModel,
    TwoTowerModel,
    build_candidates,
    score_batch,
)

logger = logging.getLogger(__name__)

# Fields that change neither the data order nor the weights: a resumed run may change them.
_RESUMABLE_FIELDS = frozenset({"checkpoint_every", "keep_checkpoints", "log_every", "num_threads"})

BUCKET_BATCHES = 50
"""With ``length_buckets``, each run of this many batches of the epoch order is sorted by length
before it is cut into batches: batches of similar lengths, still drawn from the whole data."""


@dataclass(frozen=True)
class StepInfo:
    """What ``on_step`` receives after each optimizer step (and its checkpoint, if any)."""

    step: int
    epoch: int
    loss: float
    lr: float
    checkpoint: Path | None


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`fit`.

    Attributes:
        best_metric: Best ``validate`` value (higher is better), ``None`` without ``validate``.
        best_step: Step at which it was reached.
        steps: Optimizer steps done in total (across resumes).
        curve: Points ``{"step", "epoch", "loss", "lr", <metric_name>}``; the metric is
            ``None`` at points without an evaluation.
        model_dir: ``run_dir/model``: the best model (or the final one without ``validate``).
        checkpoint_path: The last checkpoint written.
        elapsed_seconds: Training time, summed over resumed sessions.
        stopped_early: Whether early stopping ended the run.
        privacy: The DP-SGD guarantee (:class:`shopaug.train.dp.PrivacyReport` as a dict) of
            a run with ``config.privacy`` enabled; ``None`` otherwise.
    """

    best_metric: float | None
    best_step: int | None
    steps: int
    curve: list[dict[str, Any]]
    model_dir: Path
    checkpoint_path: Path | None
    elapsed_seconds: float
    stopped_early: bool
    privacy: dict[str, Any] | None = None


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
    """The data order of ``epoch``: a permutation seeded by ``(seed, epoch)`` only.

    Being a pure function of its arguments, the order needs no saved state to resume.
    """
    return np.random.default_rng([seed, epoch]).permutation(size)


def epoch_batches(
    seed: int,
    epoch: int,
    *,
    batch_size: int,
    size: int,
    lengths: Sequence[int] | np.ndarray | None = None,
    bucket_batches: int = BUCKET_BATCHES,
    texts: Sequence[frozenset[str]] | None = None,
) -> list[np.ndarray]:
    """The batches (example indices) of ``epoch``, a pure function of the arguments.

    With ``texts`` (per example, the texts it holds) the batches never hold two examples that
    share a text: :func:`no_duplicate_batches` packs the epoch order.

    Without ``lengths`` they are :func:`epoch_order` cut into runs of ``batch_size`` (the last
    may be smaller). With ``lengths`` (one per example) the order is cut into chunks of
    ``bucket_batches * batch_size`` examples, each chunk is sorted by length (ties in epoch
    order) and cut into batches, and the batches are shuffled by a generator seeded by
    ``(seed, epoch, 1)``: every example once per epoch, as many batches as without buckets, and
    the same batches for the same seed, epoch and lengths, so resume needs no saved state.

    Raises:
        ValueError: If ``lengths`` does not have ``size`` entries.
    """
    order = epoch_order(seed, epoch, size)
    if texts is not None:
        if lengths is not None:
            raise ValueError("give lengths (buckets) or texts (no duplicates), not both")
        if len(texts) != size:
            raise ValueError(f"texts has {len(texts)} entries; expected {size}")
        return no_duplicate_batches(order, texts, batch_size=batch_size)
    if lengths is None:
        return [order[start : start + batch_size] for start in range(0, size, batch_size)]
    length_array = np.asarray(lengths)
    if length_array.shape != (size,):
        raise ValueError(f"lengths has shape {length_array.shape}; expected ({size},)")
    chunk = batch_size * max(1, bucket_batches)
    batches: list[np.ndarray] = []
    for chunk_start in range(0, size, chunk):
        part = order[chunk_start : chunk_start + chunk]
        part = part[np.argsort(length_array[part], kind="stable")]
        batches.extend(
            part[start : start + batch_size] for start in range(0, len(part), batch_size)
        )
    shuffle = np.random.default_rng([seed, epoch, 1]).permutation(len(batches))
    return [batches[index] for index in shuffle]


def no_duplicate_batches(
    order: np.ndarray, texts: Sequence[frozenset[str]], *, batch_size: int
) -> list[np.ndarray]:
    """``order`` packed into ``ceil(len(order) / batch_size)`` batches in which no two
    examples share a text, as far as the data allows.

    The rule of sentence-transformers' ``NoDuplicatesBatchSampler``: walk the remaining
    examples in order, take each one whose texts the batch does not hold yet, close the batch
    at ``batch_size`` and start the next walk from the first example left. The loop needs the
    same number of steps in every epoch, so when the last batch is closed, examples that fit
    no batch without a duplicate (a query with more positives than the epoch has batches) are
    dealt round-robin to the batches, which then exceed ``batch_size`` by that many; there the
    loss's in-batch masking keeps a query's own positives from being its negatives. Every
    example lands in exactly one batch.
    """
    count = math.ceil(len(order) / batch_size)
    remaining = [int(index) for index in order]
    batches: list[list[int]] = []
    while remaining and len(batches) < count:
        batch: list[int] = []
        held: set[str] = set()
        left: list[int] = []
        for position, index in enumerate(remaining):
            if len(batch) == batch_size:
                left.extend(remaining[position:])
                break
            if held.isdisjoint(texts[index]):
                batch.append(index)
                held |= texts[index]
            else:
                left.append(index)
        batches.append(batch)
        remaining = left
    for position, index in enumerate(remaining):
        batches[position % len(batches)].append(index)
    return [np.asarray(batch, dtype=np.int64) for batch in batches]


def example_texts(examples: Sequence[TrainingExample]) -> list[frozenset[str]]:
    """The texts of each group (query, positive, negatives), for :func:`no_duplicate_batches`."""
    return [frozenset((e.query, e.positive, *e.negatives)) for e in examples]


def example_lengths(examples: Sequence[TrainingExample]) -> np.ndarray:
    """Characters of each group's texts (query, positive and negatives): ``(len(examples),)``."""
    return np.array(
        [
            len(example.query) + len(example.positive) + sum(map(len, example.negatives))
            for example in examples
        ],
        dtype=np.int64,
    )


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def set_torch_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads to ``requested`` (``None``: :func:`available_cores`).

    Torch's thread count is per process, so it is only set (and logged) when it changes.

    Returns:
        The thread count in use.
    """
    wanted = requested or available_cores()
    if torch.get_num_threads() != wanted:
        previous = torch.get_num_threads()
        torch.set_num_threads(wanted)
        logger.info("torch threads: %d (was %d)", wanted, previous)
    return wanted


def size_sequence_length(
    model: SequenceLengthModel, examples: Sequence[TrainingExample], config: TrainConfig
) -> int:
    """Set ``model``'s training sequence length from ``config`` or from the examples' texts.

    Every distinct text is tokenised here, once (so the model's token cache holds them all
    before the first step).

    Returns:
        The length set.
    """
    texts = list(
        dict.fromkeys(
            text
            for example in examples
            for text in (example.query, example.positive, *example.negatives)
        )
    )
    counts = model.token_counts(texts)
    cap = model.max_sequence_length
    if config.max_seq_length is not None:
        length = min(config.max_seq_length, cap)
    else:
        length = length_covering(counts, coverage=config.sequence_length_coverage, cap=cap)
    model.set_train_sequence_length(length)
    truncated = int((counts > length).sum())
    logger.info(
        "training sequence length %d tokens (%s; model max %d): %d of %d texts truncated, "
        "longest %d",
        length,
        "configured"
        if config.max_seq_length is not None
        else f"covers {config.sequence_length_coverage:.0%} of the texts",
        cap,
        truncated,
        len(texts),
        int(counts.max()) if len(counts) else 0,
    )
    return length


def check_adapters(model: nn.Module, config: TrainConfig) -> None:
    """Refuse ``config.lora`` for a model built without LoRA adapters (it would train every
    weight while the settings say otherwise)."""
    if config.lora is not None and not has_lora(model):
        raise ConfigError(
            f"train.lora is set (r={config.lora.r}) but {type(model).__name__} has no LoRA "
            "adapters; build the model with lora=config.lora.settings(seed)"
        )


def linear_schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Learning-rate factor for step ``i`` (0-based): linear warm-up, then linear decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``config.optimizer`` over the trainable parameters."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def build_objective(config: TrainConfig) -> TotalLoss:
    """``config.loss`` plus ``config.lambda_div`` times the bounded diversity term."""
    ranking = LOSSES[config.loss](temperature=config.temperature)
    diversity = DiversityLoss(temperature=config.temperature) if config.lambda_div > 0 else None
    return TotalLoss(ranking, diversity, lam=config.lambda_div)


def data_fingerprint(examples: Sequence[TrainingExample]) -> str:
    """sha256 of the training groups (texts, order and weights)."""
    digest = hashlib.sha256()
    for example in examples:
        record = [example.query, example.positive, list(example.negatives), example.weight]
        digest.update(json.dumps(record).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _config_fingerprint(config: TrainConfig) -> dict[str, Any]:
    return {
        key: value
        for key, value in config.model_dump(mode="json").items()
        if key not in _RESUMABLE_FIELDS
    }


def _check_same_run(saved: dict[str, Any], config: TrainConfig, data_hash: str, path: Path) -> None:
    current = _config_fingerprint(config)
    changed = sorted(
        key
        for key in set(current) | set(saved["config"])
        if current.get(key) != saved["config"].get(key)
    )
    if changed:
        details = ", ".join(
            f"{key}: {saved['config'].get(key)!r} -> {current.get(key)!r}" for key in changed
        )
        raise ConfigError(
            f"checkpoint {path} was made with another config ({details}); resume with the "
            "same config, or pass resume=False / use a new run directory"
        )
    if saved["data"] != data_hash:
        raise ConfigError(
            f"checkpoint {path} was made on other training examples (their sha256 differs); "
            "resume on the same examples, or pass resume=False / use a new run directory"
        )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _save_model(model: EmbeddingModel | PairScoringModel | TwoTowerModel, directory: Path) -> None:
    """``model.save`` into a temporary folder, then swap it in for ``directory``."""
    temporary = directory.with_name(directory.name + ".tmp")
    previous = directory.with_name(directory.name + ".old")
    for stale in (temporary, previous):
        if stale.exists():
            shutil.rmtree(stale)
    model.save(temporary)
    if directory.exists():
        directory.rename(previous)
    temporary.rename(directory)
    if previous.exists():
        shutil.rmtree(previous)


def _clear_outputs(run_dir: Path) -> None:
    for path in (checkpoint_root(run_dir), run_dir / "tb"):
        if path.exists():
            logger.warning("resume=False: removing the previous run's %s", path)
            shutil.rmtree(path)
    curve = run_dir / "curve.jsonl"
    if curve.exists():
        curve.unlink()


def fit(
    model: nn.Module,
    train_examples: Sequence[TrainingExample],
    config: TrainConfig,
    *,
    run_dir: str | Path,
    validate: Callable[[Any], float] | None = None,
    resume: bool = True,
    metrics_logger: MetricsLogger | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    show_progress: bool = True,
    negative_sampling: NegativeSampling | None = None,
    data_parallel: DataParallelGroup | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_examples``; resume exactly from ``run_dir`` if it holds a run.

    Each epoch visits the examples in a permutation seeded by ``(config.seed, epoch)``, in
    batches of ``config.batch_size`` groups (the last one may be smaller; with
    ``config.length_buckets`` groups of similar text length share a batch, see
    :func:`epoch_batches`). Every step scores each group's candidates (positive first, own
    negatives, then in-batch negatives if configured), applies :func:`build_objective`, clips
    the gradient norm and steps the optimizer and the warm-up + linear-decay schedule.

    Before the first step torch's CPU threads are set (``config.num_threads``, default one per
    core), and a model that tokenises (:class:`~shopaug.train.trainable.SequenceLengthModel`)
    gets its training sequence length (``config.max_seq_length``, or sized from the texts, see
    :func:`size_sequence_length`) and tokenises every distinct text once.

    Checkpoints (model, optimizer, scheduler, RNG states, data position, early-stopping state)
    are written atomically every ``config.checkpoint_every`` steps and at the end. With
    ``resume=True`` a run folder that holds one continues from it: a run killed at any point
    and resumed ends with the same weights and metrics as one that was never interrupted.

    Args:
        model: An ``nn.Module`` that is an :class:`~shopaug.train.trainable.EmbeddingModel`
            or a :class:`~shopaug.train.trainable.PairScoringModel`.
        train_examples: Training groups.
        config: Hyper-parameters.
        run_dir: Output folder: ``checkpoints/``, ``model/`` (the best model, or the last one
            without ``validate``), ``curve.jsonl``, ``tb/`` (TensorBoard).
        validate: Called with the model (in eval mode, without gradients); returns a metric,
            higher is better. Drives early stopping and the choice of ``model/``.
        resume: Continue from the newest checkpoint in ``run_dir``; ``False`` starts over,
            removing the previous checkpoints, curve and TensorBoard logs.
        metrics_logger: Receives ``train/loss``, ``train/lr`` and the metric; default:
            TensorBoard under ``run_dir/tb``.
        on_step: Called after every step with a :class:`StepInfo` (progress hooks, tests).
        show_progress: Show a tqdm progress bar.
        negative_sampling: Draw extra negatives for every group at every step through a
            sampler (see :mod:`shopaug.train.sampling`); ``None`` (the default) trains on the
            groups' own (and in-batch) negatives only.
        data_parallel: This process's place among data-parallel workers (one
            ``torch.distributed`` process group, e.g. Ray Train's; see
            :mod:`shopaug.train.data_parallel`): each trains on its share of every batch,
            gradients are summed over the workers, and only rank 0 writes ``model/`` and
            checkpoints. With one worker the run is the same as without.

    Returns:
        A :class:`TrainResult`.

    Raises:
        TypeError: If the model is neither kind of trainable model.
        ValueError: If there are no examples, or the loss or a metric is not finite.
        ConfigError: If ``run_dir`` holds a checkpoint of another config or other data, or
            ``config.privacy`` is enabled (DP-SGD trains query towers only).
    """
    if config.privacy.enabled:
        raise ConfigError(
            "train.privacy: DP-SGD trains a query tower (tower: query, "
            "shopaug.train.dp.fit_query_groups_private), not both towers through fit: "
            "in-batch negatives and shared item encodings couple the examples"
        )
    check_adapters(model, config)
    if not isinstance(model, nn.Module) or not isinstance(model, TRAINABLE_MODELS):
        raise TypeError(
            f"fit needs an nn.Module with embed(texts), embed_queries(texts) + "
            f"embed_items(texts), or score_pairs(queries, documents), and save(directory); "
            f"got {type(model).__name__}"
        )
    examples = list(train_examples)
    if not examples:
        raise ValueError("train_examples is empty")
    if negative_sampling is not None:
        negative_sampling.check_loss(config.loss)
        if data_parallel is not None:
            raise ConfigError(
                "fit: negative_sampling and data_parallel together are not supported (the "
                "sampled negatives of a batch are not dealt out to workers); drop one"
            )
    writes = data_parallel is None or data_parallel.writes
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model_dir = run_dir / "model"
    curve_path = run_dir / "curve.jsonl"
    interrupted_swap = model_dir.with_name("model.old")
    if not model_dir.exists() and interrupted_swap.exists():  # killed inside _save_model
        interrupted_swap.rename(model_dir)

    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    warmup_steps = round(config.warmup_ratio * total_steps)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_schedule(total_steps, warmup_steps)
    )
    objective = build_objective(config)
    data_hash = data_fingerprint(examples)
    if negative_sampling is not None:
        sampling_record = f"{data_hash}:{negative_sampling.fingerprint()}"
        data_hash = hashlib.sha256(sampling_record.encode()).hexdigest()
    set_torch_threads(config.num_threads)
    if isinstance(model, SequenceLengthModel):
        size_sequence_length(model, examples, config)
    lengths = example_lengths(examples) if config.length_buckets else None
    texts = example_texts(examples) if config.no_duplicates else None

    def batches_of(epoch: int) -> list[np.ndarray]:
        return epoch_batches(
            config.seed,
            epoch,
            batch_size=config.batch_size,
            size=len(examples),
            lengths=lengths,
            texts=texts,
        )

    state = _initial_state(config, data_hash)
    checkpoint_path = latest_checkpoint(run_dir) if resume else None
    if not resume:
        _clear_outputs(run_dir)
    if checkpoint_path is not None:
        with open(checkpoint_path / "state.json", encoding="utf-8") as handle:
            _check_same_run(json.load(handle)["loop"], config, data_hash, checkpoint_path)
        state = load_checkpoint(
            checkpoint_path, model=model, optimizer=optimizer, scheduler=scheduler
        )
        logger.info("resuming from %s (step %d of %d)", checkpoint_path, state["step"], total_steps)
    else:
        _seed_everything(config.seed)
    write_curve(curve_path, state["curve"])

    def result() -> TrainResult:
        return TrainResult(
            best_metric=state["best_metric"],
            best_step=state["best_step"],
            steps=state["step"],
            curve=list(state["curve"]),
            model_dir=model_dir,
            checkpoint_path=checkpoint_path,
            elapsed_seconds=state["elapsed_seconds"],
            stopped_early=state["stopped_early"],
        )

    if state["finished"]:
        logger.info("run in %s is already finished; nothing to do", run_dir)
        return result()

    owns_logger = metrics_logger is None
    if metrics_logger is None:
        metrics_logger = default_logger(run_dir, purge_step=state["step"] + 1)
    started = time.monotonic()
    elapsed_before = state["elapsed_seconds"]
    progress = tqdm(
        total=total_steps,
        initial=state["step"],
        desc="train",
        unit="step",
        disable=not show_progress,
    )
    batches = batches_of(state["epoch"])
    batches_epoch = state["epoch"]
    if data_parallel is not None:
        data_parallel.broadcast_parameters(model)
    try:
        while not state["finished"]:
            if batches_epoch != state["epoch"]:
                batches = batches_of(state["epoch"])
                batches_epoch = state["epoch"]
            batch = [examples[i] for i in batches[state["position"]]]
            share = 1.0
            if data_parallel is not None:
                batch, share = data_parallel.shard(batch)
            sampled = (
                None
                if negative_sampling is None
                else negative_sampling.draw(batch, seed=config.seed, step=state["step"] + 1)
            )

            loss_value, lr = _train_step(
                model,
                batch,
                config,
                objective,
                optimizer,
                scheduler,
                state["step"] + 1,
                sampled,
                data_parallel=data_parallel,
                share=share,
            )
            state["step"] += 1
            state["position"] += 1
            step = state["step"]
            end_of_epoch = state["position"] == steps_per_epoch
            if end_of_epoch:
                state["epoch"] += 1
                state["position"] = 0
            last_step = step == total_steps
            state["window_loss_sum"] += loss_value
            state["window_loss_count"] += 1
            if metrics_logger is not None:
                metrics_logger.log_scalars({"train/loss": loss_value, "train/lr": lr}, step)

            metric = None
            evaluate = validate is not None and (
                last_step
                or (config.eval_every is not None and step % config.eval_every == 0)
                or (config.eval_every is None and end_of_epoch)
            )
            if evaluate and validate is not None:
                metric = _run_validation(model, validate, step)
                if metrics_logger is not None:
                    metrics_logger.log_scalars({config.metric_name: metric}, step)
                if _record_metric(state, metric, step, config) and writes:
                    _save_model(model, model_dir)
            if evaluate or last_step or step % config.log_every == 0:
                point = {
                    "step": step,
                    "epoch": step / steps_per_epoch,
                    "loss": state["window_loss_sum"] / state["window_loss_count"],
                    "lr": lr,
                    config.metric_name: metric,
                }
                state["curve"].append(point)
                append_curve(curve_path, point)
                state["window_loss_sum"], state["window_loss_count"] = 0.0, 0

            state["finished"] = last_step or state["stopped_early"]
            if state["finished"] and validate is None and writes:
                _save_model(model, model_dir)
            state["elapsed_seconds"] = elapsed_before + time.monotonic() - started
            written = None
            if writes and (
                state["finished"]
                or (config.checkpoint_every is not None and step % config.checkpoint_every == 0)
                or (config.checkpoint_every is None and end_of_epoch)
            ):
                written = save_checkpoint(
                    run_dir,
                    step=step,
                    model=model,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    loop_state=state,
                    keep=config.keep_checkpoints,
                )
                checkpoint_path = written
            progress.update(1)
            progress.set_postfix(loss=f"{loss_value:.4f}")
            if on_step is not None:
                on_step(StepInfo(step, state["epoch"], loss_value, lr, written))
    finally:
        progress.close()
        if owns_logger and metrics_logger is not None:
            metrics_logger.close()
    return result()


def _initial_state(config: TrainConfig, data_hash: str) -> dict[str, Any]:
    """Loop state of a fresh run; it is saved in every checkpoint's ``state.json``."""
    return {
        "config": _config_fingerprint(config),
        "data": data_hash,
        "step": 0,
        "epoch": 0,
        "position": 0,
        "best_metric": None,
        "best_step": None,
        "bad_evaluations": 0,
        "window_loss_sum": 0.0,
        "window_loss_count": 0,
        "curve": [],
        "elapsed_seconds": 0.0,
        "finished": False,
        "stopped_early": False,
    }


def _train_step(
    model: nn.Module,
    batch: list[TrainingExample],
    config: TrainConfig,
    objective: TotalLoss,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    sampled: SampledBatch | None = None,
    *,
    data_parallel: DataParallelGroup | None = None,
    share: float = 1.0,
) -> tuple[float, float]:
    """One optimizer step on ``batch`` (``sampled``'s groups if given); returns (loss, lr used).

    With ``data_parallel``, ``batch`` is this worker's share of the batch and the gradients
    (and the loss returned) are combined over the workers before clipping.
    """
    model.train()
    if sampled is not None:
        batch = sampled.examples
    candidates = build_candidates(
        batch,
        in_batch_negatives=config.in_batch_negatives,
        excluded=None if sampled is None else sampled.excluded,
    )
    scores, mask = score_batch(model, candidates)  # type: ignore[arg-type]  # (batch, width)
    weights = torch.tensor(candidates.weights, dtype=scores.dtype, device=scores.device)
    log_q = None
    if sampled is not None and sampled.log_q is not None:
        log_q = sampled.log_q_columns(candidates, like=scores)  # (batch, width)
    loss = objective(scores, mask=mask, weights=weights, log_q=log_q)
    if not torch.isfinite(loss):
        raise ValueError(
            f"training loss is {loss.item()} at step {step}; lower config.lr or raise "
            "config.temperature"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    loss_value = float(loss.item())
    if data_parallel is not None:
        loss_value = data_parallel.combine_gradients(model, loss_value, share)
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    lr = float(optimizer.param_groups[0]["lr"])
    optimizer.step()
    scheduler.step()
    return loss_value, lr


def _record_metric(state: dict[str, Any], metric: float, step: int, config: TrainConfig) -> bool:
    """Update best metric and patience in ``state``; True when ``metric`` is a new best."""
    best = state["best_metric"]
    if best is None or metric > best + config.min_delta:
        state["best_metric"], state["best_step"] = metric, step
        state["bad_evaluations"] = 0
        logger.info("step %d: %s %.4f (best)", step, config.metric_name, metric)
        return True
    state["bad_evaluations"] += 1
    logger.info("step %d: %s %.4f", step, config.metric_name, metric)
    patience = config.early_stopping_patience
    if patience is not None and state["bad_evaluations"] >= patience:
        state["stopped_early"] = True
        logger.info("early stopping at step %d: no improvement in %d evaluations", step, patience)
    return False


def _run_validation(model: nn.Module, validate: Callable[[Any], float], step: int) -> float:
    model.eval()
    try:
        with torch.no_grad():
            value = float(validate(model))
    finally:
        model.train()
    if not math.isfinite(value):
        raise ValueError(f"validate returned {value} at step {step}; it must be a finite float")
    return value
