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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from shopaug.losses.multi_positive import MultiPositiveInfoNCELoss
from shopaug.train.config import TrainConfig
from shopaug.train.loop import TrainResult, build_optimizer, epoch_order, linear_schedule
from shopaug.train.tracking import append_curve, default_logger, write_curve

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

    With ``config.privacy.enabled`` the groups train with DP-SGD instead
    (:func:`shopaug.train.dp.fit_query_groups_private`: own negatives only, per-example
    clipping, noise, an accountant's epsilon in ``privacy.json`` and the result).

    Raises:
        TypeError: If the model lacks the query/item methods.
        ValueError: If there are no groups or the loss is not finite.
    """
    if config.privacy.enabled:
        from shopaug.train.dp import fit_query_groups_private

        return fit_query_groups_private(
            model,
            groups,
            config,
            run_dir=run_dir,
            validate=validate,
            refresh=refresh,
            show_progress=show_progress,
        )
    if not isinstance(model, torch.nn.Module) or not isinstance(model, QueryItemModel):
        raise TypeError(
            f"fit_query_groups needs an nn.Module with embed_queries, embed_items and save; "
            f"got {type(model).__name__}"
        )
    current = list(groups)
    if not current:
        raise ValueError("groups is empty")
    run_dir = Path(run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    model_dir, curve_path = run_dir / "model", run_dir / "curve.jsonl"
    write_curve(curve_path, [])

    steps_per_epoch = math.ceil(len(current) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_schedule(total_steps, round(config.warmup_ratio * total_steps))
    )
    objective = MultiPositiveInfoNCELoss(temperature=config.temperature)
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)

    curve: list[dict[str, Any]] = []
    best: float | None = None
    best_step: int | None = None
    bad, step, stopped = 0, 0, False
    started = time.monotonic()
    progress = tqdm(total=total_steps, desc="train", unit="step", disable=not show_progress)
    metrics_logger = default_logger(run_dir, purge_step=None)  # TensorBoard or MLflow
    try:
        for epoch in range(config.epochs):
            if epoch > 0 and refresh is not None:
                model.eval()
                with torch.no_grad():
                    current = list(refresh(model, epoch))
            order = epoch_order(config.seed, epoch, len(current))
            losses: list[float] = []
            model.train()
            for start in range(0, len(current), config.batch_size):
                if step >= total_steps:
                    break
                batch = [current[i] for i in order[start : start + config.batch_size]]
                lr = float(optimizer.param_groups[0]["lr"])
                loss = _step(model, batch, objective, optimizer, scheduler, config, step + 1)
                losses.append(loss)
                step += 1
                if metrics_logger is not None:
                    metrics_logger.log_scalars({"train/loss": loss, "train/lr": lr}, step)
                progress.update(1)
                progress.set_postfix(loss=f"{loss:.4f}")
            point: dict[str, Any] = {
                "step": step,
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)) if losses else None,
                "lr": float(optimizer.param_groups[0]["lr"]),
                config.metric_name: None,
            }
            if validate is not None:
                model.eval()
                with torch.no_grad():
                    metric = float(validate(model))
                model.train()
                if not math.isfinite(metric):
                    raise ValueError(f"validate returned {metric} after epoch {epoch + 1}")
                point[config.metric_name] = metric
                if metrics_logger is not None:
                    metrics_logger.log_scalars({config.metric_name: metric}, step)
                if best is None or metric > best + config.min_delta:
                    best, best_step, bad = metric, step, 0
                    model.save(model_dir)
                else:
                    bad += 1
                logger.info("epoch %d: %s %.4f", epoch + 1, config.metric_name, metric)
                patience = config.early_stopping_patience
                stopped = patience is not None and bad >= patience
            curve.append(point)
            append_curve(curve_path, point)
            if stopped or step >= total_steps:
                break
    finally:
        progress.close()
        if metrics_logger is not None:
            metrics_logger.close()
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


def _step(
    model: Any,
    batch: list[QueryGroup],
    objective: MultiPositiveInfoNCELoss,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
    step: int,
) -> float:
    items, positive, negative, weights = batch_masks(batch)
    queries = model.embed_queries([group.query for group in batch])  # (batch, dim)
    item_vectors = model.embed_items(items)  # (items, dim)
    scores = queries @ item_vectors.T  # (batch, items)
    loss = objective(
        scores,
        positive_mask=positive.to(scores.device),
        negative_mask=negative.to(scores.device),
        positive_weights=weights.to(scores.device),
    )
    if not torch.isfinite(loss):
        raise ValueError(f"training loss is {loss.item()} at step {step}; lower config.lr")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    scheduler.step()
    return float(loss.item())
