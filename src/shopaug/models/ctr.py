"""Click-through-rate models of ad impressions, with position and rare clicks handled explicitly.

A :class:`CtrModel` reads a table of impressions or candidates (the columns of
:func:`shopaug.data.open_bandit.impression_table`), one-hot encodes it with a
:class:`FeatureEncoder` and returns calibrated click probabilities.

Position (the slot an ad was shown at; lower slots get fewer clicks whatever the ad):

* ``feature``: the slot is a feature at training; a ranking or a served CTR reads every
  candidate at one fixed slot (:data:`SERVING_POSITION`), so candidates compare fairly;
* ``ipw``: the slot is left out and every click is weighted by ``1 / theta_k``, the examination
  propensity of its slot, ``theta_k = CTR_k / max_j CTR_j`` measured on the training rows
  (Joachims et al. 2017). The model learns the click rate at the best-examined slot; the CTR at
  slot ``k`` is ``theta_k`` times it;
* ``none``: the slot is ignored (the baseline that confounds position with the ad).

Rare clicks: with ``negative_rate = w < 1`` each non-click is kept with probability ``w`` (a
seeded draw) and the model is trained on the sample; its output ``q`` is mapped back to the
full population with ``p = q / (q + (1 - q) / w)`` (He et al. 2014, "Practical lessons from
predicting clicks on ads at Facebook").

Features: :data:`FEATURE_SETS` names what a model reads (``all`` by default: every user and item
column, the affinities, and the slot under ``position: feature``); smaller sets (the item alone,
the item and its slot with their cross ``item*position``, the context alone) show where the
signal is. A cross ``a*b`` is one categorical column whose values are the pairs of values.

A model directory holds ``ctr-model.json`` (settings, encoder vocabulary, position
propensities) and the learner's own file (see :mod:`shopaug.models.ctr_estimators`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from shopaug.models.ctr_estimators import (
    ESTIMATORS,
    Estimator,
    EstimatorSettings,
    NetworkTrainer,
    NeuralEstimator,
)

logger = logging.getLogger(__name__)

POSITION_MODES = ("feature", "ipw", "none")
SERVING_POSITION = 1
DESCRIPTOR = "ctr-model.json"
CATEGORICAL = (
    "user_feature_0",
    "user_feature_1",
    "user_feature_2",
    "user_feature_3",
    "campaign",
    "item",
    "item_feature_1",
    "item_feature_2",
    "item_feature_3",
)
NUMERIC = ("item_feature_0", "affinity", "affinity_total")
#: The columns read as numbers and their transform (affinities are counts: ``log1p``).
_NUMERIC_TRANSFORMS = {
    "item_feature_0": lambda values: values,
    "affinity": lambda values: np.log1p(np.maximum(values, 0)),
    "affinity_total": lambda values: np.log1p(np.maximum(values, 0)),
}
CROSS = "*"
USER_COLUMNS = CATEGORICAL[:4]


@dataclass(frozen=True)
class FeatureSet:
    """The categorical columns (a cross ``a*b`` among them) and numeric columns a model reads;
    the slot is added by ``position: feature`` whatever the set."""

    categorical: tuple[str, ...]
    numeric: tuple[str, ...]


FEATURE_SETS = {
    "all": FeatureSet(CATEGORICAL, NUMERIC),
    "all+item*position": FeatureSet((*CATEGORICAL, f"item{CROSS}position"), NUMERIC),
    "item": FeatureSet(("item",), ()),
    "item*position": FeatureSet(("item", f"item{CROSS}position"), ()),
    "context": FeatureSet(USER_COLUMNS, ("affinity", "affinity_total")),
    "item+context": FeatureSet(("item", *USER_COLUMNS), ("affinity", "affinity_total")),
}
"""Feature sets by config name (``CtrSettings.features``)."""


@dataclass(frozen=True)
class CtrSettings:
    """What a CTR model is.

    Attributes:
        model: ``logistic``, ``lightgbm`` or ``neural``.
        position: ``feature``, ``ipw`` or ``none`` (see the module docstring).
        negative_rate: Fraction of non-clicks kept for training, in (0, 1]; 1 keeps all.
        seed: Seed of the down-sampling draw and of the learner.
        estimator: The learners' hyper-parameters.
        features: The :data:`FEATURE_SETS` entry the model reads.
    """

    model: str = "logistic"
    position: str = "feature"
    negative_rate: float = 1.0
    seed: int = 0
    estimator: EstimatorSettings = field(default_factory=EstimatorSettings)
    features: str = "all"

    def __post_init__(self) -> None:
        if self.model not in ESTIMATORS:
            raise ValueError(f"model is {self.model!r}; expected one of {', '.join(ESTIMATORS)}")
        if self.position not in POSITION_MODES:
            raise ValueError(
                f"position is {self.position!r}; expected one of {', '.join(POSITION_MODES)}"
            )
        if not 0 < self.negative_rate <= 1:
            raise ValueError(f"negative_rate is {self.negative_rate}; expected a number in (0, 1]")
        if self.features not in FEATURE_SETS:
            raise ValueError(
                f"features is {self.features!r}; expected one of {', '.join(FEATURE_SETS)}"
            )


def column_values(table: pd.DataFrame, column: str) -> pd.Series:
    """The string values of ``column``; for a cross ``a*b``, ``"<a>*<b>"`` per row."""
    parts = column.split(CROSS)
    values = table[parts[0]].astype(str)
    for part in parts[1:]:
        values = values + CROSS + table[part].astype(str)
    return values


class FeatureEncoder:
    """One-hot columns for every categorical value seen at fit time (an unseen value gets no
    column), the numeric columns (``log1p`` of the affinities, the item's numeric feature), and
    (optionally) the slot.

    Example:
        >>> frame = pd.DataFrame({c: ["a"] for c in CATEGORICAL} | {c: [0.0] for c in NUMERIC})
        >>> FeatureEncoder.fit(frame, with_position=False).transform(frame).shape
        (1, 12)
    """

    def __init__(
        self,
        vocabulary: Mapping[str, Sequence[str]],
        with_position: bool,
        numeric: Sequence[str] = NUMERIC,
    ) -> None:
        self.vocabulary = {column: list(values) for column, values in vocabulary.items()}
        self.with_position = with_position
        self.numeric = tuple(numeric)
        self._index = {
            column: {value: i for i, value in enumerate(values)}
            for column, values in self.vocabulary.items()
        }
        self._offsets = np.cumsum([0] + [len(v) for v in self.vocabulary.values()])

    @classmethod
    def fit(
        cls, table: pd.DataFrame, *, with_position: bool, features: str = "all"
    ) -> FeatureEncoder:
        """The vocabulary of ``table`` for the :data:`FEATURE_SETS` entry ``features``."""
        chosen = FEATURE_SETS[features]
        columns = [*chosen.categorical, *(["position"] if with_position else [])]
        vocabulary = {column: sorted(set(column_values(table, column))) for column in columns}
        return cls(vocabulary, with_position, chosen.numeric)

    @property
    def width(self) -> int:
        return int(self._offsets[-1]) + len(self.numeric)

    def transform(self, table: pd.DataFrame) -> sparse.csr_matrix:
        """``(rows, width)`` float64 CSR matrix."""
        rows = len(table)
        blocks_rows, blocks_cols = [], []
        for offset, (column, index) in zip(self._offsets, self._index.items()):
            codes = column_values(table, column).map(index).to_numpy()
            known = ~pd.isna(codes)
            blocks_rows.append(np.flatnonzero(known))
            blocks_cols.append(codes[known].astype(np.int64) + offset)
        one_hot = sparse.csr_matrix(
            (
                np.ones(sum(r.size for r in blocks_rows)),
                (np.concatenate(blocks_rows), np.concatenate(blocks_cols)),
            ),
            shape=(rows, int(self._offsets[-1])),
        )
        numeric = np.column_stack(
            [
                _NUMERIC_TRANSFORMS[column](table[column].to_numpy(dtype=np.float64))
                for column in self.numeric
            ]
            or [np.zeros((rows, 0))]
        )
        return sparse.hstack([one_hot, sparse.csr_matrix(numeric)], format="csr")

    def as_dict(self) -> dict[str, Any]:
        return {
            "vocabulary": self.vocabulary,
            "with_position": self.with_position,
            "numeric": list(self.numeric),
        }


def position_propensities(table: pd.DataFrame) -> dict[int, float]:
    """``theta_k = CTR_k / max_j CTR_j`` per slot, with one pseudo-click per slot (spread at
    the pooled rate) so that a slot without clicks does not get weight infinity."""
    pooled = float(table["click"].mean())
    clicks = table.groupby("position")["click"].agg(["sum", "size"])
    rates = {
        int(k): (float(row["sum"]) + pooled) / (float(row["size"]) + 1)
        for k, row in zip(clicks.index.to_numpy(), clicks.to_dict("records"))
    }
    best = max(rates.values())
    return {k: rate / best for k, rate in sorted(rates.items())}


def recalibrate(probabilities: np.ndarray, negative_rate: float) -> np.ndarray:
    """Map a probability learned on a sample keeping ``negative_rate`` of the non-clicks back
    to the full population: ``p = q / (q + (1 - q) / w)``."""
    q = np.asarray(probabilities, dtype=np.float64)
    return q / (q + (1 - q) / negative_rate)


def downsample(labels: np.ndarray, negative_rate: float, seed: int) -> np.ndarray:
    """Indices of the rows kept: every click and each non-click with probability
    ``negative_rate`` (a generator seeded by ``seed``)."""
    keep = (labels == 1) | (np.random.default_rng(seed).random(labels.size) < negative_rate)
    return np.flatnonzero(keep)


class CtrModel:
    """A fitted CTR model: settings, encoder, learner and slot propensities."""

    def __init__(
        self,
        settings: CtrSettings,
        encoder: FeatureEncoder,
        estimator: Estimator,
        propensities: Mapping[int, float],
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self.estimator = estimator
        self.propensities = dict(propensities)

    @classmethod
    def fit(
        cls,
        table: pd.DataFrame,
        settings: CtrSettings,
        *,
        trainer: NetworkTrainer | None = None,
        encoder: FeatureEncoder | None = None,
        features: sparse.csr_matrix | None = None,
    ) -> CtrModel:
        """Fit on an :func:`~shopaug.data.open_bandit.impression_table` (with ``click``).

        ``trainer`` trains the ``neural`` learner's network instead of its plain loop (DP-SGD:
        :class:`shopaug.train.dp_sgd.PrivateRowTraining`); other learners refuse one.

        ``encoder`` (fitted on a superset of ``table``, say a whole log) and ``features``
        (``table`` encoded by it, ``(len(table), width)``) spare the encoding when one log is
        fitted many times (cross-fitting, bootstrap runs). A value the training rows lack then
        has a column that is zero in every training row, which the learners leave at zero
        weight (L2) or never split on, so the predictions are those of a model with the
        training rows' own vocabulary.
        """
        if trainer is not None and settings.model != "neural":
            raise ValueError(
                f"a network trainer (DP-SGD) trains the neural model only; got model "
                f"{settings.model!r}"
            )
        labels = table["click"].to_numpy(dtype=np.int64)
        if labels.sum() == 0:
            raise ValueError("the training impressions have no clicks; a CTR model needs some")
        propensities = position_propensities(table)
        kept = downsample(labels, settings.negative_rate, settings.seed)
        sample = table.iloc[kept]
        weights = np.ones(kept.size)
        if settings.position == "ipw":
            theta = sample["position"].map(propensities).to_numpy(dtype=np.float64)
            weights = np.where(labels[kept] == 1, 1.0 / theta, 1.0)
        with_position = settings.position == "feature"
        if encoder is None:
            encoder = FeatureEncoder.fit(
                table, with_position=with_position, features=settings.features
            )
        elif encoder.with_position != with_position:
            raise ValueError(
                f"the encoder has with_position={encoder.with_position}; position "
                f"{settings.position!r} needs {with_position}"
            )
        if features is not None and features.shape != (len(table), encoder.width):
            raise ValueError(
                f"features have shape {features.shape}; expected ({len(table)}, {encoder.width})"
            )
        estimator: Estimator = (
            NeuralEstimator(settings.estimator, settings.seed, trainer=trainer)
            if trainer is not None
            else ESTIMATORS[settings.model](settings.estimator, settings.seed)
        )
        matrix = encoder.transform(sample) if features is None else features[kept]
        estimator.fit(matrix, labels[kept], weights)
        logger.info(
            "ctr %s/%s/w=%g: %d rows (%d clicks), %d features",
            settings.model,
            settings.position,
            settings.negative_rate,
            kept.size,
            int(labels[kept].sum()),
            encoder.width,
        )
        return cls(settings, encoder, estimator, propensities)

    def predict(self, table: pd.DataFrame, *, position: int | None = None) -> np.ndarray:
        """Click probability of each row at its ``position`` column, or at ``position`` for
        every row when given (a ranking or a served CTR uses :data:`SERVING_POSITION`)."""
        if position is not None:
            table = table.assign(position=position)
        return self.predict_encoded(
            self.encoder.transform(table), table["position"].to_numpy(dtype=np.int64)
        )

    def predict_encoded(self, features: sparse.csr_matrix, positions: np.ndarray) -> np.ndarray:
        """:meth:`predict` of rows already encoded by :attr:`encoder` (``(rows, width)``), shown
        at ``positions`` ``(rows,)`` (the slots the features encode, with ``position:
        feature``)."""
        probability = self.estimator.predict(features)
        if self.settings.negative_rate < 1:
            probability = recalibrate(probability, self.settings.negative_rate)
        if self.settings.position == "ipw":
            theta = pd.Series(positions).map(self.propensities).fillna(1.0)
            probability = probability * theta.to_numpy(dtype=np.float64)
        return probability

    def save(self, directory: str | Path) -> Path:
        """Write ``ctr-model.json`` and the learner's file into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.estimator.save(directory)
        descriptor = {
            "kind": "ctr",
            "settings": asdict(self.settings),
            "encoder": self.encoder.as_dict(),
            "position_propensities": {str(k): v for k, v in self.propensities.items()},
        }
        (directory / DESCRIPTOR).write_text(json.dumps(descriptor, indent=1), "utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> CtrModel:
        """The model saved in ``directory`` by :meth:`save`.

        Raises:
            FileNotFoundError: ``directory`` has no ``ctr-model.json``.
            ValueError: The descriptor is not a CTR model's.
        """
        directory = Path(directory)
        path = directory / DESCRIPTOR
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: not a CTR model directory")
        descriptor = json.loads(path.read_text("utf-8"))
        if descriptor.get("kind") != "ctr":
            raise ValueError(f"{path}: kind is {descriptor.get('kind')!r}; expected 'ctr'")
        raw = dict(descriptor["settings"])
        settings = CtrSettings(**{**raw, "estimator": EstimatorSettings(**raw["estimator"])})
        encoder = FeatureEncoder(
            descriptor["encoder"]["vocabulary"],
            descriptor["encoder"]["with_position"],
            descriptor["encoder"].get("numeric", NUMERIC),
        )
        estimator = ESTIMATORS[settings.model].load(directory, settings.estimator)
        propensities = {int(k): float(v) for k, v in descriptor["position_propensities"].items()}
        return cls(settings, encoder, estimator, propensities)


__all__ = [
    "FEATURE_SETS",
    "POSITION_MODES",
    "SERVING_POSITION",
    "CtrModel",
    "CtrSettings",
    "FeatureEncoder",
    "FeatureSet",
    "column_values",
    "downsample",
    "position_propensities",
    "recalibrate",
]
