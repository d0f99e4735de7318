"""The DP-SGD machinery shared by every private training loop: Opacus around a model, Poisson
batches, the accountant, and the record of the guarantee (``privacy.json``).

Differentially private SGD (Abadi et al., 2016) bounds what one training example can change:
each example's gradient is clipped to ``max_grad_norm``, the clipped gradients are summed,
Gaussian noise of standard deviation ``noise_multiplier * max_grad_norm`` is added, and a
privacy accountant turns the noise, the sampling rate and the number of steps into an
(epsilon, delta) guarantee. Opacus does the per-example gradients (``GradSampleModule``), the
clipping and noise (``DPOptimizer``) and the accounting (RDP or PRV accountant); :class:`DpSgd`
adds Poisson sampling (each step takes every example independently with probability
``q = batch_size / examples``, drawn from ``(seed, step)``: the sampling model the accountant
analyses; an empty draw is a step with noise only).

Two loops use it: query towers on query groups (:mod:`shopaug.train.dp`) and the neural CTR
model on impressions (:class:`PrivateRowTraining`, the trainer a
:class:`~shopaug.models.ctr_estimators.NeuralEstimator` takes).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shopaug.errors import ConfigError, require
from shopaug.train.config import PrivacyConfig

logger = logging.getLogger(__name__)

#: Written beside the model (and in the training folder): the guarantee of its weights.
PRIVACY_FILE = "privacy.json"
#: The protected unit of query-tower training.
GROUP_UNIT = "one training query group (a query with its positives and negatives)"
#: The protected unit of CTR training.
IMPRESSION_UNIT = "one training impression (a row of the impression table)"


@dataclass(frozen=True)
class PrivacyReport:
    """What a DP-SGD run guarantees and how: written to ``privacy.json`` and the manifest.

    Attributes:
        epsilon: The accountant's epsilon at ``delta`` after ``steps`` steps; infinite (JSON
            ``null``) without noise, which guarantees nothing.
        delta: The delta of the guarantee.
        noise_multiplier: Noise standard deviation over ``max_grad_norm``.
        max_grad_norm: Per-example clipping norm.
        sample_rate: Poisson sampling probability of an example per step.
        steps: Steps taken.
        examples: Training examples (the protected unit, see ``unit``).
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
    unit: str = GROUP_UNIT

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["epsilon"] = finite_or_none(self.epsilon)
        return payload


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


class DpSgd:
    """Opacus around a model and its optimiser: per-example gradients (``GradSampleModule``),
    clipping and noise (``DPOptimizer``), Poisson batches drawn from ``(seed, step)`` and the
    accountant. The training loops of query towers and of the neural CTR model share it.

    Args:
        model: The module whose trainable parameters get per-example gradients; every one of
            them must be reached by each example's loss.
        optimizer: The optimiser over those parameters (wrapped; use :attr:`optimizer`).
        privacy: Noise (or target epsilon), delta, clipping norm and accountant.
        examples: The training examples the Poisson draws choose from.
        batch_size: The expected batch: each example is drawn with ``q = batch_size /
            examples`` (at most 1).
        steps: The planned steps (the noise for a target epsilon is calibrated for them).
        seed: Seeds the draws and the noise.

    Call :meth:`close` at the end: it removes Opacus' hooks from the model.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        privacy: PrivacyConfig,
        *,
        examples: int,
        batch_size: int,
        steps: int,
        seed: int,
    ) -> None:
        grad_sample = require("opacus.grad_sample", "privacy")
        optimizers = require("opacus.optimizers", "privacy")
        accountants = require("opacus.accountants", "privacy")
        self.privacy, self.examples, self.seed = privacy, examples, seed
        self.sample_rate = min(1.0, batch_size / examples)
        self.noise_multiplier = noise_for(privacy, sample_rate=self.sample_rate, steps=steps)
        torch.manual_seed(seed)
        self._tracked = grad_sample.GradSampleModule(model, batch_first=True, loss_reduction="mean")
        self.optimizer = optimizers.DPOptimizer(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=privacy.max_grad_norm,
            expected_batch_size=max(1, round(self.sample_rate * examples)),
            loss_reduction="mean",
            generator=torch.Generator(device="cpu").manual_seed(seed),
        )
        self.accountant = accountants.create_accountant(privacy.accountant)
        self.steps = 0

    def draw(self, step: int) -> np.ndarray:
        """Indices of the examples of step ``step``'s Poisson batch (may be empty)."""
        drawn = np.random.default_rng([self.seed, step]).random(self.examples)
        return np.flatnonzero(drawn < self.sample_rate)

    def step(self, batch_loss: Callable[[], torch.Tensor] | None) -> float | None:
        """One DP-SGD step. ``batch_loss`` computes the mean of the batch's per-example
        losses; ``None`` (an empty draw) is a step with noise only. Returns the loss."""
        self.optimizer.zero_grad(set_to_none=True)
        value = None
        if batch_loss is not None:
            loss = batch_loss()
            if not torch.isfinite(loss):
                raise ValueError(f"training loss is {loss.item()} at step {self.steps + 1}")
            loss.backward()
            value = float(loss.item())
        else:
            for parameter in self.optimizer.params:
                parameter.grad_sample = torch.zeros((0, *parameter.shape))
        self.optimizer.step()
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        self.steps += 1
        return value

    def epsilon(self) -> float:
        """The accountant's epsilon after the steps taken; 0 before any, infinite without
        noise."""
        if self.steps == 0:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf
        return float(self.accountant.get_epsilon(delta=self.privacy.delta))

    def report(self, *, trainable_parameters: int, unit: str = GROUP_UNIT) -> PrivacyReport:
        """The guarantee of the weights after the steps taken."""
        return PrivacyReport(
            epsilon=self.epsilon(),
            delta=self.privacy.delta,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.privacy.max_grad_norm,
            sample_rate=self.sample_rate,
            steps=self.steps,
            examples=self.examples,
            accountant=self.privacy.accountant,
            trainable_parameters=trainable_parameters,
            unit=unit,
        )

    def close(self) -> None:
        """Remove Opacus' hooks and per-example gradients from the model."""
        self._tracked._close()


class PrivateRowTraining:
    """DP-SGD for a network trained on table rows: the ``trainer`` of a
    :class:`~shopaug.models.ctr_estimators.NeuralEstimator` (one impression, one example).

    Each of ``epochs * ceil(rows / batch_size)`` steps takes a Poisson batch of rows
    (expected size ``batch_size``) and applies the clipped, noised mean of their per-row
    losses through the estimator's optimiser. After a call, :attr:`report` holds the
    guarantee.

    Example:
        >>> trainer = PrivateRowTraining(PrivacyConfig(enabled=True, target_epsilon=8.0))
        >>> estimator = NeuralEstimator(settings, seed=0, trainer=trainer)  # doctest: +SKIP
        >>> estimator.fit(features, labels, weights)  # doctest: +SKIP
        >>> trainer.report.epsilon <= 8.0  # doctest: +SKIP
        True
    """

    def __init__(self, privacy: PrivacyConfig) -> None:
        if not privacy.enabled:
            raise ConfigError("privacy.enabled is false; train without a DP trainer")
        self.privacy = privacy
        self.report: PrivacyReport | None = None

    def __call__(
        self,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        row_losses: Callable[[np.ndarray], torch.Tensor],
        *,
        rows: int,
        batch_size: int,
        epochs: int,
        seed: int,
    ) -> None:
        """Train ``network`` in place; ``row_losses(indices)`` gives the per-row losses
        ``(len(indices),)`` of those training rows."""
        if rows < 1:
            raise ValueError("no training rows")
        steps = epochs * math.ceil(rows / batch_size)
        engine = DpSgd(
            network,
            optimizer,
            self.privacy,
            examples=rows,
            batch_size=batch_size,
            steps=steps,
            seed=seed,
        )
        losses: list[float] = []
        try:
            for step in range(1, steps + 1):
                drawn = engine.draw(step)
                batch_loss = (lambda rows=drawn: row_losses(rows).mean()) if drawn.size else None
                loss = engine.step(batch_loss)
                if loss is not None:
                    losses.append(loss)
        finally:
            engine.close()
        trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
        self.report = engine.report(trainable_parameters=trainable, unit=IMPRESSION_UNIT)
        logger.info(
            "DP-SGD on %d rows: %d steps, q=%.4f, sigma=%.3f, mean loss %.5f, epsilon %.3f "
            "at delta %g",
            rows,
            steps,
            engine.sample_rate,
            engine.noise_multiplier,
            float(np.mean(losses)) if losses else float("nan"),
            self.report.epsilon,
            self.report.delta,
        )


def finite_or_none(value: float) -> float | None:
    """JSON has no infinity: an epsilon without noise is written as null."""
    return value if math.isfinite(value) else None


def write_privacy(folder: str | Path, report: PrivacyReport) -> Path:
    """Write ``report`` as ``folder/privacy.json``."""
    path = Path(folder) / PRIVACY_FILE
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n", "utf-8")
    return path


def read_privacy(model_dir: str | Path) -> dict[str, Any] | None:
    """The ``privacy.json`` of a model folder, or None for a model trained without DP."""
    path = Path(model_dir) / PRIVACY_FILE
    if not path.is_file():
        return None
    payload = json.loads(path.read_text("utf-8"))
    return payload if isinstance(payload, dict) else None
