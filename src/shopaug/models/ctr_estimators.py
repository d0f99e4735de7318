"""The learners behind :class:`~shopaug.models.ctr.CtrModel`: logistic regression, LightGBM and a
small neural network, each fitted on a sparse one-hot feature matrix with per-row weights.

Each estimator saves to plain files, never a pickle: logistic regression as JSON coefficients,
LightGBM in its own text model format, the network as safetensors. scikit-learn and LightGBM
come with the ``ctr`` extra and torch with ``train``; they are imported when a model is built.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy import sparse

from shopaug.errors import require

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EstimatorSettings:
    """Hyper-parameters of the three learners (only the chosen learner's are read).

    Attributes:
        l2: Inverse L2 strength ``C`` of the logistic regression.
        trees: Boosting rounds of LightGBM.
        leaves: Leaves per LightGBM tree.
        min_child_samples: Smallest leaf of LightGBM (keeps trees from chasing single clicks).
        learning_rate: LightGBM's shrinkage and the network's AdamW learning rate.
        hidden: Hidden units of the network.
        epochs: Passes of the network over the training rows.
        batch_size: Rows per network step.
        weight_decay: AdamW weight decay of the network.
        threads: CPU threads for LightGBM and torch.
    """

    l2: float = 0.1
    trees: int = 200
    leaves: int = 8
    min_child_samples: int = 100
    learning_rate: float = 0.03
    hidden: int = 32
    epochs: int = 6
    batch_size: int = 512
    weight_decay: float = 1e-4
    threads: int = 1


class NetworkTrainer(Protocol):
    """Trains the neural estimator's network in place of its plain loop; DP-SGD is
    :class:`shopaug.train.dp_sgd.PrivateRowTraining` (the training layer supplies it, this
    layer only calls it).

    ``row_losses(indices)`` returns the weighted loss of each of those training rows
    ``(len(indices),)``; ``optimizer`` is the network's AdamW.
    """

    def __call__(
        self,
        network: Any,
        optimizer: Any,
        row_losses: Callable[[np.ndarray], Any],
        *,
        rows: int,
        batch_size: int,
        epochs: int,
        seed: int,
    ) -> None: ...


class Estimator(Protocol):
    """A learner of click probabilities from a feature matrix."""

    def fit(self, features: sparse.csr_matrix, labels: np.ndarray, weights: np.ndarray) -> None: ...

    def predict(self, features: sparse.csr_matrix) -> np.ndarray: ...

    def save(self, directory: Path) -> None: ...


class LogisticEstimator:
    """L2-regularised logistic regression (scikit-learn, lbfgs)."""

    def __init__(self, settings: EstimatorSettings, seed: int) -> None:
        self.settings, self.seed = settings, seed
        self.coef = np.zeros(0)
        self.intercept = 0.0

    def fit(self, features: sparse.csr_matrix, labels: np.ndarray, weights: np.ndarray) -> None:
        linear_model = require("sklearn.linear_model", "ctr")
        model = linear_model.LogisticRegression(
            C=self.settings.l2, max_iter=2000, random_state=self.seed
        )
        model.fit(features, labels, sample_weight=weights)
        self.coef = model.coef_[0].astype(np.float64)
        self.intercept = float(model.intercept_[0])

    def predict(self, features: sparse.csr_matrix) -> np.ndarray:
        logits = features @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))

    def save(self, directory: Path) -> None:
        payload = {"intercept": self.intercept, "coef": self.coef.tolist()}
        (directory / "logistic.json").write_text(json.dumps(payload), "utf-8")

    @classmethod
    def load(cls, directory: Path, settings: EstimatorSettings) -> LogisticEstimator:
        payload = json.loads((directory / "logistic.json").read_text("utf-8"))
        estimator = cls(settings, 0)
        estimator.coef = np.asarray(payload["coef"], dtype=np.float64)
        estimator.intercept = float(payload["intercept"])
        return estimator


class LightGBMEstimator:
    """Gradient-boosted trees (LightGBM ``binary`` objective), deterministic for a seed."""

    def __init__(self, settings: EstimatorSettings, seed: int) -> None:
        self.settings, self.seed = settings, seed
        self.booster: Any = None

    def fit(self, features: sparse.csr_matrix, labels: np.ndarray, weights: np.ndarray) -> None:
        lightgbm = require("lightgbm", "ctr")
        params = {
            "objective": "binary",
            "learning_rate": self.settings.learning_rate,
            "num_leaves": self.settings.leaves,
            "min_child_samples": self.settings.min_child_samples,
            "lambda_l2": 1.0,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.settings.threads,
            "verbose": -1,
        }
        data = lightgbm.Dataset(features.astype(np.float32), labels, weight=weights)
        self.booster = lightgbm.train(params, data, num_boost_round=self.settings.trees)

    def predict(self, features: sparse.csr_matrix) -> np.ndarray:
        return np.asarray(self.booster.predict(features.astype(np.float32)), dtype=np.float64)

    def save(self, directory: Path) -> None:
        self.booster.save_model(str(directory / "lightgbm.txt"))

    @classmethod
    def load(cls, directory: Path, settings: EstimatorSettings) -> LightGBMEstimator:
        lightgbm = require("lightgbm", "ctr")
        estimator = cls(settings, 0)
        estimator.booster = lightgbm.Booster(model_file=str(directory / "lightgbm.txt"))
        return estimator


class NeuralEstimator:
    """A one-hidden-layer network over the one-hot features (in effect, learned embeddings of
    every user, item and attribute value summed into a hidden layer), trained with shopaug's
    :class:`~shopaug.losses.bce.BCELoss` (the text models' loop in ``train`` sits above this
    layer; the few lines of a tabular loop live here).

    Each impression is one row of the loss: ``BCE(s, y) = BCE(-s, 1 - y)``, so the score enters
    column 0 (the loss's "positive" column) as ``s`` for a click and ``-s`` otherwise.

    A ``trainer`` (a :class:`NetworkTrainer`, DP-SGD say) replaces the plain loop: it gets the
    network, the optimiser and the per-row losses ``w_i BCE(s_i, y_i)``."""

    def __init__(
        self, settings: EstimatorSettings, seed: int, trainer: NetworkTrainer | None = None
    ) -> None:
        self.settings, self.seed, self.trainer = settings, seed, trainer
        self.network: Any = None

    def _build(self, inputs: int) -> Any:
        torch = require("torch", "train")
        torch.manual_seed(self.seed)
        return torch.nn.Sequential(
            torch.nn.Linear(inputs, self.settings.hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(self.settings.hidden, 1),
        )

    def fit(self, features: sparse.csr_matrix, labels: np.ndarray, weights: np.ndarray) -> None:
        torch = require("torch", "train")
        from shopaug.losses.bce import BCELoss

        torch.set_num_threads(self.settings.threads)
        self.network = self._build(features.shape[1])
        rate = float(np.average(labels, weights=weights))
        with torch.no_grad():  # start at the base rate, not at 50 %
            self.network[2].bias.fill_(float(np.log(rate / (1 - rate))))
        optimiser = torch.optim.AdamW(
            self.network.parameters(),
            lr=self.settings.learning_rate,
            weight_decay=self.settings.weight_decay,
        )
        loss_fn = BCELoss()
        sign = torch.as_tensor(np.where(labels == 1, 1.0, -1.0), dtype=torch.float32)
        row_weights = torch.as_tensor(weights, dtype=torch.float32)
        self.network.train()
        if self.trainer is not None:

            def row_losses(rows: np.ndarray) -> Any:
                inputs = torch.as_tensor(features[rows].toarray(), dtype=torch.float32)
                scores = self.network(inputs)[:, 0] * sign[rows]  # (rows,)
                per_row = torch.nn.functional.binary_cross_entropy_with_logits(
                    scores, torch.ones_like(scores), reduction="none"
                )
                return per_row * row_weights[rows]

            self.trainer(
                self.network,
                optimiser,
                row_losses,
                rows=features.shape[0],
                batch_size=self.settings.batch_size,
                epochs=self.settings.epochs,
                seed=self.seed,
            )
            self.network.eval()
            return
        for epoch in range(self.settings.epochs):
            total = 0.0
            # the order of an epoch is a pure function of (seed, epoch), as in train.loop
            order = np.random.default_rng([self.seed, epoch]).permutation(features.shape[0])
            for start in range(0, order.size, self.settings.batch_size):
                batch = order[start : start + self.settings.batch_size]
                inputs = torch.as_tensor(features[batch].toarray(), dtype=torch.float32)
                scores = self.network(inputs)  # (batch, 1)
                loss = loss_fn(scores * sign[batch, None], weights=row_weights[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(batch)
            logger.info("ctr network epoch %d: loss %.5f", epoch + 1, total / features.shape[0])
        self.network.eval()

    def predict(self, features: sparse.csr_matrix, chunk: int = 65_536) -> np.ndarray:
        torch = require("torch", "train")
        out = []
        with torch.no_grad():
            for start in range(0, features.shape[0], chunk):
                part = features[start : start + chunk].toarray()
                logits = self.network(torch.as_tensor(part, dtype=torch.float32))[:, 0]
                out.append(torch.sigmoid(logits.double()).numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        tensors = {name: t.detach().contiguous() for name, t in self.network.state_dict().items()}
        save_file(tensors, str(directory / "network.safetensors"))

    @classmethod
    def load(cls, directory: Path, settings: EstimatorSettings) -> NeuralEstimator:
        from safetensors.torch import load_file

        tensors = load_file(str(directory / "network.safetensors"))
        estimator = cls(settings, 0)
        estimator.network = estimator._build(int(tensors["0.weight"].shape[1]))
        estimator.network.load_state_dict(tensors)
        estimator.network.eval()
        return estimator


ESTIMATORS: dict[str, type[LogisticEstimator | LightGBMEstimator | NeuralEstimator]] = {
    "logistic": LogisticEstimator,
    "lightgbm": LightGBMEstimator,
    "neural": NeuralEstimator,
}
"""Learners by config name."""
