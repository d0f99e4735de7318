"""DP-SGD for a query tower: per-example clipping, Gaussian noise and an accountant (Opacus).

The machinery (Opacus around the model, Poisson batches drawn from ``(seed, step)``, the
accountant, ``privacy.json``) is :mod:`shopaug.train.dp_sgd`; the epochs, validation and early
stopping are the loop of :func:`~shopaug.train.grouped.fit_query_groups`
(:class:`~shopaug.train.grouped.EpochLoop`). This module supplies what the analysis assumes
of query-group training:

* **One example, one loss.** The protected unit is a training query group. In-batch negatives
  (:func:`shopaug.train.grouped.batch_masks`) score each query against the other queries'
  items, so one example's gradient would depend on another's data and clipping per example
  would no longer bound it. Here each group is scored against its own positives and its own
  negatives only (:func:`own_item_masks`); a group without negatives contributes no gradient.
* **Poisson sampling.** Each step takes every group independently with probability
  ``q = batch_size / groups`` (the accountant's sampling model; a shuffled fixed-size batch
  is not what RDP accounting for subsampled Gaussians analyses), so ``refresh`` must keep the
  number of groups.
* **Frozen items.** Only a query tower trains (catalog vectors frozen and cached, no item
  adapter: an adapter's inputs are items, not examples). By default only the top
  ``trainable_layers`` transformer layers train; token, position and type embeddings are
  frozen (Opacus cannot attribute the broadcast position embeddings to examples).

The steps are planned as in :func:`~shopaug.train.grouped.fit_query_groups` (``epochs`` times
``ceil(groups / batch_size)``, capped by ``max_steps``); with ``target_epsilon`` the noise is
calibrated for that many steps. The epsilon reported is the accountant's after the steps
actually taken, for the last model; the model kept by validation was released after fewer
steps, so its epsilon is at most that (validation queries are not protected).

Example:
    >>> config = TrainConfig(batch_size=8, privacy={"enabled": True, "target_epsilon": 8.0})
    >>> result = fit_query_groups_private(tower, groups, config, run_dir="dp")  # doctest: +SKIP
    >>> result.privacy["epsilon"] <= 8.0  # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shopaug.errors import ConfigError, require
from shopaug.losses.multi_positive import MultiPositiveInfoNCELoss
from shopaug.train.config import TrainConfig
from shopaug.train.dp_sgd import (
    PRIVACY_FILE,
    DpSgd,
    PrivacyReport,
    finite_or_none,
    noise_for,
    read_privacy,
    write_privacy,
)
from shopaug.train.grouped import EpochLoop, QueryGroup, checked_groups, fresh_run_dir
from shopaug.train.loop import TrainResult, build_optimizer, linear_schedule

logger = logging.getLogger(__name__)

__all__ = [
    "PRIVACY_FILE",
    "PrivacyReport",
    "fit_query_groups_private",
    "freeze_for_privacy",
    "noise_for",
    "own_item_masks",
    "per_example_losses",
    "read_privacy",
]

_LAYER = re.compile(r"\.layer\.(\d+)\.")


def own_item_masks(
    batch: Sequence[QueryGroup],
) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's distinct item texts and, per row, masks over its OWN items only.

    Unlike :func:`~shopaug.train.grouped.batch_masks`, a row's negatives are only the
    negatives it lists (minus its positives and known positives), so each row's loss depends
    on its own data alone.

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
    shape = (len(batch), len(items))
    positive = np.zeros(shape, dtype=bool)
    negative = np.zeros(shape, dtype=bool)
    weights = np.zeros(shape, dtype=np.float32)
    for row, group in enumerate(batch):
        columns = [column[text] for text in group.positives]
        group_weights = group.positive_weights or (1.0,) * len(group.positives)
        np.maximum.at(weights[row], columns, np.asarray(group_weights, dtype=np.float32))
        positive[row, columns] = True
        excluded = set(group.positives) | group.known_positives
        negative[row, [column[t] for t in group.negatives if t not in excluded]] = True
    return items, torch.from_numpy(positive), torch.from_numpy(negative), torch.from_numpy(weights)


def per_example_losses(
    model: Any, batch: Sequence[QueryGroup], objective: MultiPositiveInfoNCELoss
) -> torch.Tensor:
    """Each row's multi-positive InfoNCE against its own items ``(batch,)``."""
    items, positive, negative, weights = own_item_masks(batch)
    queries = model.embed_queries([group.query for group in batch])  # (batch, dim)
    item_vectors = model.embed_items(items)  # (items, dim), frozen
    scores = queries @ item_vectors.T  # (batch, items)
    device = scores.device
    return torch.stack(
        [
            objective(
                scores[row : row + 1],
                positive_mask=positive[row : row + 1].to(device),
                negative_mask=negative[row : row + 1].to(device),
                positive_weights=weights[row : row + 1].to(device),
            )
            for row in range(len(batch))
        ]
    )


def freeze_for_privacy(model: torch.nn.Module, trainable_layers: int | None) -> int:
    """Freeze embedding tables and all but the top ``trainable_layers`` transformer layers
    (parameters named ``...layer.<i>...``); return the number of parameters left trainable.

    A model without numbered layers (a linear map, say) keeps its trainable parameters.
    """
    named = list(model.named_parameters())
    layers = [int(m.group(1)) for name, _ in named if (m := _LAYER.search(name))]
    lowest = max(layers) + 1 - trainable_layers if layers and trainable_layers else None
    for name, parameter in named:
        if "embeddings" in name:
            parameter.requires_grad_(False)
        match = _LAYER.search(name)
        if lowest is not None and (match is None or int(match.group(1)) < lowest):
            parameter.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _freeze_unreached(
    model: torch.nn.Module, group: QueryGroup, objective: MultiPositiveInfoNCELoss
) -> int:
    """Freeze trainable parameters that a query's loss does not reach (a module of the item
    side, say): Opacus needs a per-example gradient for every parameter it updates. Which
    parameters are reached depends on the model's structure, not on the group's data."""
    per_example_losses(model, [group], objective).sum().backward()
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.grad is None:
            parameter.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def fit_query_groups_private(
    model: Any,
    groups: Sequence[QueryGroup],
    config: TrainConfig,
    *,
    run_dir: str | Path,
    validate: Callable[[Any], float] | None = None,
    refresh: Callable[[Any, int], Sequence[QueryGroup]] | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train a query tower on query groups with DP-SGD (``config.privacy``, enabled).

    Args:
        model: An ``nn.Module`` with ``embed_queries``, ``embed_items`` (frozen) and ``save``;
            a :class:`~shopaug.models.query_tower.QueryTowerModel` without item adapter.
        groups: The training groups; each should list its own negatives.
        config: ``batch_size`` is the expected Poisson batch; ``lr``, schedule, ``epochs``,
            ``max_steps``, ``temperature``, ``early_stopping_patience`` and ``seed`` apply;
            ``grad_clip`` is replaced by the per-example ``privacy.max_grad_norm``.
        run_dir: Gets ``model/`` (best by ``validate``, else the last), ``curve.jsonl`` and
            ``privacy.json`` (also copied into ``model/``).
        validate: Called with the model in eval mode after every epoch; higher is better.
        refresh: Called as ``refresh(model, epoch)`` before every epoch after the first; its
            groups (each with the same query, negatives re-drawn from the current model)
            replace the current ones.
        show_progress: A tqdm bar over steps.

    Returns:
        The :class:`TrainResult`; its ``privacy`` is the :class:`PrivacyReport` as a dict.

    Raises:
        ConfigError: Privacy is off, or the model trains an item adapter.
        MissingExtraError: Opacus is not installed.
    """
    privacy = config.privacy
    if not privacy.enabled:
        raise ConfigError("train.privacy.enabled is false; use fit_query_groups")
    current = checked_groups(model, groups, "DP training")
    if getattr(model, "item_adapter", None) is not None:
        raise ConfigError(
            "train.privacy needs item_adapter: false (an adapter's gradients come from items "
            "shared by many examples, which per-example clipping cannot bound)"
        )
    require("opacus", "privacy")
    without = sum(1 for group in current if not group.negatives)
    if without:
        logger.warning(
            "%d of %d groups list no negatives: they add no gradient under DP-SGD "
            "(no in-batch negatives)",
            without,
            len(current),
        )
    loop = EpochLoop(
        model, config, fresh_run_dir(run_dir), len(current), show_progress, label="train (DP)"
    )
    objective = MultiPositiveInfoNCELoss(temperature=config.temperature)
    freeze_for_privacy(model, privacy.trainable_layers)
    trainable = _freeze_unreached(model, current[0], objective)
    engine = DpSgd(
        model,
        build_optimizer(model, config),
        privacy,
        examples=len(current),
        batch_size=config.batch_size,
        steps=loop.total_steps,
        seed=config.seed,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        engine.optimizer,
        linear_schedule(loop.total_steps, round(config.warmup_ratio * loop.total_steps)),
    )
    logger.info(
        "DP-SGD: %d groups, q=%.4f, sigma=%.3f, C=%.3g, %d steps, %d trainable parameters",
        len(current),
        engine.sample_rate,
        engine.noise_multiplier,
        privacy.max_grad_norm,
        loop.total_steps,
        trainable,
    )
    steps = _PoissonGroupSteps(model, engine, scheduler, objective, loop.steps_per_epoch)
    try:
        result = loop.run(
            current, steps, validate=validate, refresh=_same_size(refresh, len(current))
        )
    finally:
        engine.close()
    report = engine.report(trainable_parameters=trainable)
    for folder in (loop.run_dir, result.model_dir):
        write_privacy(folder, report)
    logger.info(
        "DP-SGD: epsilon %.3f at delta %g after %d steps",
        report.epsilon,
        report.delta,
        report.steps,
    )
    return replace(result, privacy=report.to_json())


class _PoissonGroupSteps:
    """Poisson batches of groups, each scored against its own items, through :class:`DpSgd`."""

    def __init__(
        self,
        model: Any,
        engine: DpSgd,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        objective: MultiPositiveInfoNCELoss,
        steps_per_epoch: int,
    ) -> None:
        self.model, self.engine, self.scheduler = model, engine, scheduler
        self.objective, self.steps_per_epoch = objective, steps_per_epoch

    def batches(
        self, epoch: int, groups: Sequence[QueryGroup], first_step: int
    ) -> Iterator[list[QueryGroup]]:
        for step in range(first_step + 1, first_step + self.steps_per_epoch + 1):
            yield [groups[i] for i in self.engine.draw(step)]

    def step(self, batch: list[QueryGroup], step: int) -> float | None:
        loss = self.engine.step(
            (lambda: per_example_losses(self.model, batch, self.objective).mean())
            if batch
            else None
        )
        self.scheduler.step()
        return loss

    def lr(self) -> float:
        return float(self.engine.optimizer.param_groups[0]["lr"])

    def epoch_fields(self, step: int) -> dict[str, Any]:
        return {"epsilon": finite_or_none(self.engine.epsilon())}


def _same_size(
    refresh: Callable[[Any, int], Sequence[QueryGroup]] | None, size: int
) -> Callable[[Any, int], Sequence[QueryGroup]] | None:
    """``refresh``, refusing another number of groups than ``size`` (the sampling rate
    assumes a fixed set)."""
    if refresh is None:
        return None

    def checked(model: Any, epoch: int) -> Sequence[QueryGroup]:
        refreshed = list(refresh(model, epoch))
        if len(refreshed) != size:
            raise ValueError(
                f"refresh returned {len(refreshed)} groups for {size}; DP accounting needs "
                "the same groups every epoch"
            )
        return refreshed

    return checked
