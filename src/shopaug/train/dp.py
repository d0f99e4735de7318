"""DP-SGD for a query tower: per-example clipping, Gaussian noise and an accountant (Opacus).

Differentially private SGD (Abadi et al., 2016) bounds what one training example can change:
each example's gradient is clipped to ``max_grad_norm``, the clipped gradients are summed,
Gaussian noise of standard deviation ``noise_multiplier * max_grad_norm`` is added, and a
privacy accountant turns the noise, the sampling rate and the number of steps into an
(epsilon, delta) guarantee. Opacus does the per-example gradients (``GradSampleModule``), the
clipping and noise (``DPOptimizer``) and the accounting (RDP or PRV accountant); this module
supplies what its analysis assumes:

* **One example, one loss.** The protected unit is a training query group. In-batch negatives
  (:func:`shopaug.train.grouped.batch_masks`) score each query against the other queries'
  items, so one example's gradient would depend on another's data and clipping per example
  would no longer bound it. Here each group is scored against its own positives and its own
  negatives only (:func:`own_item_masks`); a group without negatives contributes no gradient.
* **Poisson sampling.** Each step takes every group independently with probability
  ``q = batch_size / groups``, drawn from ``(seed, step)`` (the accountant's sampling model;
  a shuffled fixed-size batch is not what RDP accounting for subsampled Gaussians analyses).
  An empty draw is a step with noise only.
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

import json
import logging
import math
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from shopaug.errors import ConfigError, require
from shopaug.losses.multi_positive import MultiPositiveInfoNCELoss
from shopaug.train.config import PrivacyConfig, TrainConfig
from shopaug.train.grouped import QueryGroup, QueryItemModel
from shopaug.train.loop import TrainResult, build_optimizer, linear_schedule
from shopaug.train.tracking import append_curve, write_curve

logger = logging.getLogger(__name__)

#: Written beside the model (and in the training folder): the guarantee of its weights.
PRIVACY_FILE = "privacy.json"
_LAYER = re.compile(r"\.layer\.(\d+)\.")


@dataclass(frozen=True)
class PrivacyReport:
    """What a DP-SGD run guarantees and how: written to ``privacy.json`` and the manifest.

    Attributes:
        epsilon: The accountant's epsilon at ``delta`` after ``steps`` steps; infinite (JSON
            ``null``) without noise, which guarantees nothing.
        delta: The delta of the guarantee.
        noise_multiplier: Noise standard deviation over ``max_grad_norm``.
        max_grad_norm: Per-example clipping norm.
        sample_rate: Poisson sampling probability of a group per step.
        steps: Steps taken.
        examples: Training groups (the protected unit: one query group).
        accountant: ``rdp`` or ``prv``.
        trainable_parameters: Parameters that trained (the rest were frozen).
        unit: What one "example" of the guarantee is.
    """

    epsilon: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    examples: int
    accountant: str
    trainable_parameters: int
    unit: str = "one training query group (a query with its positives and negatives)"

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["epsilon"] = _finite_or_none(self.epsilon)
        return payload


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


def noise_for(privacy: PrivacyConfig, *, sample_rate: float, steps: int) -> float:
    """The noise multiplier: the configured one, or the one that spends ``target_epsilon``."""
    if privacy.noise_multiplier is not None:
        return float(privacy.noise_multiplier)
    utils = require("opacus.accountants.utils", "privacy")
    assert privacy.target_epsilon is not None  # the config checks one of them is set
    return float(
        utils.get_noise_multiplier(
            target_epsilon=privacy.target_epsilon,
            target_delta=privacy.delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=privacy.accountant,
        )
    )


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
    if not isinstance(model, torch.nn.Module) or not isinstance(model, QueryItemModel):
        raise TypeError(f"DP training needs a query-item nn.Module, got {type(model).__name__}")
    if getattr(model, "item_adapter", None) is not None:
        raise ConfigError(
            "train.privacy needs item_adapter: false (an adapter's gradients come from items "
            "shared by many examples, which per-example clipping cannot bound)"
        )
    grad_sample = require("opacus.grad_sample", "privacy")
    optimizers = require("opacus.optimizers", "privacy")
    accountants = require("opacus.accountants", "privacy")
    current = list(groups)
    if not current:
        raise ValueError("groups is empty")
    without = sum(1 for group in current if not group.negatives)
    if without:
        logger.warning(
            "%d of %d groups list no negatives: they add no gradient under DP-SGD "
            "(no in-batch negatives)",
            without,
            len(current),
        )
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
    sample_rate = min(1.0, config.batch_size / len(current))
    expected_batch = max(1, round(sample_rate * len(current)))
    sigma = noise_for(privacy, sample_rate=sample_rate, steps=total_steps)
    objective = MultiPositiveInfoNCELoss(temperature=config.temperature)
    freeze_for_privacy(model, privacy.trainable_layers)
    trainable = _freeze_unreached(model, current[0], objective)
    torch.manual_seed(config.seed)
    tracked = grad_sample.GradSampleModule(model, batch_first=True, loss_reduction="mean")
    optimizer = optimizers.DPOptimizer(
        build_optimizer(model, config),
        noise_multiplier=sigma,
        max_grad_norm=privacy.max_grad_norm,
        expected_batch_size=expected_batch,
        loss_reduction="mean",
        generator=torch.Generator(device="cpu").manual_seed(config.seed),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_schedule(total_steps, round(config.warmup_ratio * total_steps))
    )
    accountant = accountants.create_accountant(privacy.accountant)
    logger.info(
        "DP-SGD: %d groups, q=%.4f, sigma=%.3f, C=%.3g, %d steps, %d trainable parameters",
        len(current),
        sample_rate,
        sigma,
        privacy.max_grad_norm,
        total_steps,
        trainable,
    )

    curve: list[dict[str, Any]] = []
    best: float | None = None
    best_step: int | None = None
    bad, step, stopped = 0, 0, False
    started = time.monotonic()
    progress = tqdm(total=total_steps, desc="train (DP)", unit="step", disable=not show_progress)
    try:
        for epoch in range(config.epochs):
            if epoch > 0 and refresh is not None:
                model.eval()
                with torch.no_grad():
                    refreshed = list(refresh(model, epoch))
                if len(refreshed) != len(current):  # the sampling rate assumes a fixed set
                    raise ValueError(
                        f"refresh returned {len(refreshed)} groups for {len(current)}; DP "
                        "accounting needs the same groups every epoch"
                    )
                current = refreshed
            losses: list[float] = []
            model.train()
            for _ in range(steps_per_epoch):
                if step >= total_steps:
                    break
                step += 1
                drawn = np.random.default_rng([config.seed, step]).random(len(current))
                batch = [current[i] for i in np.flatnonzero(drawn < sample_rate)]
                optimizer.zero_grad(set_to_none=True)
                if batch:
                    loss = per_example_losses(model, batch, objective).mean()
                    if not torch.isfinite(loss):
                        raise ValueError(f"training loss is {loss.item()} at step {step}")
                    loss.backward()
                    losses.append(float(loss.item()))
                else:  # an empty Poisson draw: the step adds noise only
                    for parameter in optimizer.params:
                        parameter.grad_sample = torch.zeros((0, *parameter.shape))
                optimizer.step()
                scheduler.step()
                accountant.step(noise_multiplier=sigma, sample_rate=sample_rate)
                progress.update(1)
            point: dict[str, Any] = {
                "step": step,
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)) if losses else None,
                "lr": float(optimizer.param_groups[0]["lr"]),
                "epsilon": _finite_or_none(_epsilon(accountant, sigma, privacy.delta, step)),
                config.metric_name: None,
            }
            if validate is not None:
                model.eval()
                with torch.no_grad():
                    metric = float(validate(model))
                model.train()
                point[config.metric_name] = metric
                if best is None or metric > best + config.min_delta:
                    best, best_step, bad = metric, step, 0
                    model.save(model_dir)
                else:
                    bad += 1
                patience = config.early_stopping_patience
                stopped = patience is not None and bad >= patience
            curve.append(point)
            append_curve(curve_path, point)
            if stopped or step >= total_steps:
                break
    finally:
        progress.close()
        tracked._close()  # remove Opacus' hooks and per-example gradients
    if validate is None or not model_dir.exists():
        model.save(model_dir)
    report = PrivacyReport(
        epsilon=_epsilon(accountant, sigma, privacy.delta, step),
        delta=privacy.delta,
        noise_multiplier=sigma,
        max_grad_norm=privacy.max_grad_norm,
        sample_rate=sample_rate,
        steps=step,
        examples=len(current),
        accountant=privacy.accountant,
        trainable_parameters=trainable,
    )
    for folder in (run_dir, model_dir):
        (folder / PRIVACY_FILE).write_text(json.dumps(report.to_json(), indent=2) + "\n", "utf-8")
    logger.info(
        "DP-SGD: epsilon %.3f at delta %g after %d steps", report.epsilon, report.delta, step
    )
    return TrainResult(
        best_metric=best,
        best_step=best_step,
        steps=step,
        curve=curve,
        model_dir=model_dir,
        checkpoint_path=None,
        elapsed_seconds=time.monotonic() - started,
        stopped_early=stopped,
        privacy=report.to_json(),
    )


def _epsilon(accountant: Any, sigma: float, delta: float, steps: int) -> float:
    """The accountant's epsilon; 0 before any step, infinite without noise."""
    if steps == 0:
        return 0.0
    if sigma == 0:
        return math.inf
    return float(accountant.get_epsilon(delta=delta))


def _finite_or_none(value: float) -> float | None:
    """JSON has no infinity: an epsilon without noise is written as null."""
    return value if math.isfinite(value) else None


def read_privacy(model_dir: str | Path) -> dict[str, Any] | None:
    """The ``privacy.json`` of a model folder, or None for a model trained without DP."""
    path = Path(model_dir) / PRIVACY_FILE
    if not path.is_file():
        return None
    payload = json.loads(path.read_text("utf-8"))
    return payload if isinstance(payload, dict) else None
