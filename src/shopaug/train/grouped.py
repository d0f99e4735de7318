"""Training on query groups: one row per query with all of its positives.

:func:`shopaug.train.fit` trains on (query, positive, negatives) groups, so a query with twenty
judged positives is encoded twenty times an epoch. When only the query side trains (a
:class:`~shopaug.models.query_tower.QueryTowerModel` scores queries against frozen, cached item
vectors), the query encoding is the whole cost of a step, and grouping by query makes an epoch
as many query encodings as there are training queries. Each row's loss is the
:class:`~shopaug.losses.multi_positive.MultiPositiveInfoNCELoss` of its positives against its own
negatives and the other rows' items (in-batch negatives), never against its known positives.

The loop keeps what :func:`fit` promises that matters here: a data order that is a pure function
of ``(seed, epoch)``, warm-up and linear decay, gradient clipping, validation at the end of each
epoch with early stopping, and the best model in ``run_dir/model``. It does not checkpoint
inside a run: a row takes minutes, and ``shopaug run`` caches finished rows.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from shopaug.errors import ConfigError
from shopaug.losses.multi_positive import MultiPositiveInfoNCELoss
from shopaug.train.config import TrainConfig
from shopaug.train.loop import (
    TrainResult,
    build_optimizer,
    check_adapters,
    epoch_order,
    linear_schedule,
)
from shopaug.train.tracking import MetricsLogger, append_curve, default_logger, write_curve

logger = logging.getLogger(__name__)


@runtime_checkable
class QueryItemModel(Protocol):
    """A model with a trainable query side and an item side (frozen or not)."""

    def embed_queries(self, texts: Sequence[str]) -> torch.Tensor: ...

    def embed_items(self, texts: Sequence[str]) -> torch.Tensor: ...

    def save(self, directory: str | Path) -> None: ...


@dataclass(frozen=True)
class QueryGroup:
    """A query with its positives and negatives (texts).

    Attributes:
        query: Query text.
        positives: Texts of relevant items (at least one).
        negatives: Texts of items that are not relevant (may be empty: in-batch ones remain).
        positive_weights: One weight per positive (default 1 each), e.g. the judged gain.
        known_positives: Texts that must never be scored as this query's negatives (relevant
            items that are not among ``positives``).
    """

    query: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...] = ()
    positive_weights: tuple[float, ...] | None = None
    known_positives: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not isinstance(self.query, str) or not self.query:
            raise ValueError(f"QueryGroup.query must be a non-empty str, got {self.query!r}")
        if not self.positives or not all(isinstance(t, str) and t for t in self.positives):
            raise ValueError(f"QueryGroup {self.query!r}: positives must be non-empty texts")
        if self.positive_weights is not None and len(self.positive_weights) != len(self.positives):
            raise ValueError(
                f"QueryGroup {self.query!r}: {len(self.positive_weights)} positive_weights for "
                f"{len(self.positives)} positives"
            )

    @property
    def size(self) -> int:
        """The (query, positive) pairs this group stands for."""
        return len(self.positives)


def batch_masks(
    batch: Sequence[QueryGroup],
) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's distinct item texts and, per row, positive / negative masks and weights.

    Row ``i``'s negatives are its own negatives and every other row's items, except its own
    positives and known positives.

    Returns:
        ``(items, positive_mask, negative_mask, positive_weights)``, masks ``(batch, items)``.
    """
    items: list[str] = []
    column: dict[str, int] = {}
    for group in batch:
        for text in (*group.positives, *group.negatives):
            if text not in column:
                column[text] = len(items)
                items.append(text)
    weights = np.zeros((len(batch), len(items)), dtype=np.float32)
    known = np.zeros((len(batch), len(items)), dtype=bool)
    for row, group in enumerate(batch):
        columns = [column[text] for text in group.positives]
        group_weights = group.positive_weights or (1.0,) * len(group.positives)
        # a text listed twice keeps its larger weight
        np.maximum.at(weights[row], columns, np.asarray(group_weights, dtype=np.float32))
        known[row, [column[t] for t in group.known_positives if t in column]] = True
    positive = np.zeros_like(known)
    for row, group in enumerate(batch):
        positive[row, [column[text] for text in group.positives]] = True
    negative = ~positive & ~known
    return items, torch.from_numpy(positive), torch.from_numpy(negative), torch.from_numpy(weights)


def fit_query_groups(
    model: Any,
    groups: Sequence[QueryGroup],
    config: TrainConfig,
    *,
    run_dir: str | Path,
    validate: Callable[[Any], float] | None = None,
    refresh: Callable[[Any, int], Sequence[QueryGroup]] | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train ``model`` on query groups for ``config.epochs`` epochs (or ``config.max_steps``).

    Args:
        model: An ``nn.Module`` with ``embed_queries``, ``embed_items`` and ``save``.
        groups: The training groups.
        config: ``batch_size`` counts groups (queries); ``temperature``, ``lr``, schedule,
            ``grad_clip``, ``early_stopping_patience``, ``min_delta`` and ``seed`` apply.
        run_dir: Gets ``model/`` (the best model by ``validate``, else the last),
            ``curve.jsonl`` and the tracking logs (``tb/``, or the active MLflow session's run:
            :func:`shopaug.train.tracking.default_logger`).
        validate: Called with the model in eval mode at the end of every epoch; higher is
            better.
        refresh: Called as ``refresh(model, epoch)`` before every epoch after the first; its
            groups replace the current ones (dynamic negatives from the current model).
        show_progress: A tqdm bar over steps.

    DP-SGD is another loop over the same epochs (:func:`shopaug.train.dp.
    fit_query_groups_private`); :func:`shopaug.train.fit_groups` picks the one the config asks
    for.

    Raises:
        TypeError: If the model lacks the query/item methods.
        ValueError: If there are no groups or the loss is not finite.
        ConfigError: If ``config.lora`` is set for a model without LoRA adapters, or
            ``config.privacy`` is enabled (see :func:`shopaug.train.fit_groups`).
    """
    if config.privacy.enabled:
        raise ConfigError(
            "train.privacy is enabled: train with shopaug.train.fit_groups (it runs DP-SGD, "
            "shopaug.train.dp.fit_query_groups_private) instead of fit_query_groups"
        )
    current = checked_groups(model, groups, "fit_query_groups")
    check_adapters(model, config)
    loop = EpochLoop(model, config, fresh_run_dir(run_dir), len(current), show_progress)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        linear_schedule(loop.total_steps, round(config.warmup_ratio * loop.total_steps)),
    )
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)
    steps = _InBatchSteps(model, optimizer, scheduler, config)
    loop.metrics_logger = default_logger(loop.run_dir, purge_step=None)  # TensorBoard or MLflow
    return loop.run(current, steps, validate=validate, refresh=refresh)


def checked_groups(model: Any, groups: Sequence[QueryGroup], caller: str) -> list[QueryGroup]:
    """``groups`` as a list, after checking that ``model`` can train on them."""
    if not isinstance(model, torch.nn.Module) or not isinstance(model, QueryItemModel):
        raise TypeError(
            f"{caller} needs an nn.Module with embed_queries, embed_items and save; "
            f"got {type(model).__name__}"
        )
    current = list(groups)
    if not current:
        raise ValueError("groups is empty")
    return current


def fresh_run_dir(run_dir: str | Path) -> Path:
    """``run_dir``, emptied: a query-group run does not resume (``shopaug run`` caches rows)."""
    run_dir = Path(run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    return run_dir


class GroupSteps(Protocol):
    """How the epoch loop draws its batches and takes a step: in-batch negatives
    (:func:`fit_query_groups`) or DP-SGD (:func:`shopaug.train.dp.fit_query_groups_private`)."""

    def batches(
        self, epoch: int, groups: Sequence[QueryGroup], first_step: int
    ) -> Iterator[list[QueryGroup]]:
        """The batches of ``epoch``; the first is step ``first_step + 1``."""
        ...

    def step(self, batch: list[QueryGroup], step: int) -> float | None:
        """One optimizer step on ``batch``; its loss, or None for a step without data."""
        ...

    def lr(self) -> float:
        """The learning rate of the next step."""
        ...

    def epoch_fields(self, step: int) -> dict[str, Any]:
        """Extra fields of the curve point written after ``step`` (an epsilon, say)."""
        ...


@dataclass
class EpochLoop:
    """The epoch loop of query-group training, with or without DP-SGD: groups refreshed before
    each epoch after the first, the steps of :class:`GroupSteps`, a curve point per epoch,
    validation with early stopping and the best model saved in ``run_dir/model``.

    The steps are ``epochs`` times ``ceil(groups / batch_size)``, capped by ``max_steps``.
    """

    model: Any
    config: TrainConfig
    run_dir: Path
    groups: int
    show_progress: bool = True
    label: str = "train"
    metrics_logger: MetricsLogger | None = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.groups / self.config.batch_size)

    @property
    def total_steps(self) -> int:
        total = self.config.epochs * self.steps_per_epoch
        return total if self.config.max_steps is None else min(total, self.config.max_steps)

    def run(
        self,
        groups: list[QueryGroup],
        steps: GroupSteps,
        *,
        validate: Callable[[Any], float] | None = None,
        refresh: Callable[[Any, int], Sequence[QueryGroup]] | None = None,
    ) -> TrainResult:
        """Train on ``groups``; the result of the best (or, without ``validate``, last) model."""
        model, config = self.model, self.config
        model_dir, curve_path = self.run_dir / "model", self.run_dir / "curve.jsonl"
        write_curve(curve_path, [])
        curve: list[dict[str, Any]] = []
        best: float | None = None
        best_step: int | None = None
        bad, step, stopped = 0, 0, False
        started = time.monotonic()
        total = self.total_steps
        progress = tqdm(total=total, desc=self.label, unit="step", disable=not self.show_progress)
        try:
            for epoch in range(config.epochs):
                if epoch > 0 and refresh is not None:
                    model.eval()
                    with torch.no_grad():
                        groups = list(refresh(model, epoch))
                losses: list[float] = []
                model.train()
                for batch in steps.batches(epoch, groups, step):
                    if step >= total:
                        break
                    lr = steps.lr()
                    step += 1
                    loss = steps.step(batch, step)
                    if loss is not None:
                        losses.append(loss)
                        if self.metrics_logger is not None:
                            self.metrics_logger.log_scalars(
                                {"train/loss": loss, "train/lr": lr}, step
                            )
                        progress.set_postfix(loss=f"{loss:.4f}")
                    progress.update(1)
                point: dict[str, Any] = {
                    "step": step,
                    "epoch": epoch + 1,
                    "loss": float(np.mean(losses)) if losses else None,
                    "lr": steps.lr(),
                    **steps.epoch_fields(step),
                    config.metric_name: None,
                }
                if validate is not None:
                    metric = self._validate(validate, epoch)
                    point[config.metric_name] = metric
                    if self.metrics_logger is not None:
                        self.metrics_logger.log_scalars({config.metric_name: metric}, step)
                    if best is None or metric > best + config.min_delta:
                        best, best_step, bad = metric, step, 0
                        model.save(model_dir)
                    else:
                        bad += 1
                    patience = config.early_stopping_patience
                    stopped = patience is not None and bad >= patience
                curve.append(point)
                append_curve(curve_path, point)
                if stopped or step >= total:
                    break
        finally:
            progress.close()
            if self.metrics_logger is not None:
                self.metrics_logger.close()
        if validate is None or not model_dir.exists():
            model.save(model_dir)
        return TrainResult(
            best_metric=best,
            best_step=best_step,
            steps=step,
            curve=curve,
            model_dir=model_dir,
            checkpoint_path=None,
            elapsed_seconds=time.monotonic() - started,
            stopped_early=stopped,
        )

    def _validate(self, validate: Callable[[Any], float], epoch: int) -> float:
        self.model.eval()
        with torch.no_grad():
            metric = float(validate(self.model))
        self.model.train()
        if not math.isfinite(metric):
            raise ValueError(f"validate returned {metric} after epoch {epoch + 1}")
        logger.info("epoch %d: %s %.4f", epoch + 1, self.config.metric_name, metric)
        return metric


class _InBatchSteps:
    """Shuffled batches (a pure function of ``(seed, epoch)``) scored against every item of
    the batch, with gradient clipping."""

    def __init__(
        self,
        model: Any,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        config: TrainConfig,
    ) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.config = config
        self.objective = MultiPositiveInfoNCELoss(temperature=config.temperature)

    def batches(
        self, epoch: int, groups: Sequence[QueryGroup], first_step: int
    ) -> Iterator[list[QueryGroup]]:
        order = epoch_order(self.config.seed, epoch, len(groups))
        for start in range(0, len(groups), self.config.batch_size):
            yield [groups[i] for i in order[start : start + self.config.batch_size]]

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def epoch_fields(self, step: int) -> dict[str, Any]:
        return {}

    def step(self, batch: list[QueryGroup], step: int) -> float:
        items, positive, negative, weights = batch_masks(batch)
        queries = self.model.embed_queries([group.query for group in batch])  # (batch, dim)
        item_vectors = self.model.embed_items(items)  # (items, dim)
        scores = queries @ item_vectors.T  # (batch, items)
        loss = self.objective(
            scores,
            positive_mask=positive.to(scores.device),
            negative_mask=negative.to(scores.device),
            positive_weights=weights.to(scores.device),
        )
        if not torch.isfinite(loss):
            raise ValueError(f"training loss is {loss.item()} at step {step}; lower config.lr")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.item())
