"""A LambdaMART reranker (LightGBM ``lambdarank``) over first-stage candidate features.

It learns, from graded judgments of training queries, how to reorder the top of a first stage
using the features of :mod:`shopaug.retrieval.rerank_features` (BM25 and base-encoder scores,
term overlaps, category consensus). It trains in seconds on a CPU, where a cross-encoder with a
new scoring head needs far more steps than two cores give (see benchmarks/RESULTS.md).

The model is saved as LightGBM's own text format plus a JSON description (never a pickle)::

    reranker = LambdaMartReranker(seed=0)
    reranker.fit(features, gains, group_sizes)   # features (n_pairs, n_features)
    scores = reranker.score(features_of_one_query)  # (n_candidates,)
    reranker.save(model_dir)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shopaug.errors import ConfigError

MODEL_FILE = "lambdamart.txt"
INFO_FILE = "lambdamart.json"


def _lightgbm() -> Any:
    try:
        import lightgbm
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ConfigError(
            "the lambdamart reranker needs LightGBM: pip install 'shopaug[train]' "
            "(or pip install lightgbm)"
        ) from error
    return lightgbm


@dataclass(frozen=True)
class LambdaMartSettings:
    """LightGBM ``lambdarank`` settings: trees, leaves per tree, learning rate, the smallest
    leaf, and the gain of each judgment grade (``label_gain[grade]``, linear 0/1/2 like the
    NDCG the project reports)."""

    trees: int = 300
    leaves: int = 15
    learning_rate: float = 0.05
    min_data_in_leaf: int = 20
    label_gain: tuple[float, ...] = (0.0, 1.0, 2.0)


class LambdaMartReranker:
    """LambdaMART over candidate features (see the module doc)."""

    def __init__(
        self,
        settings: LambdaMartSettings | None = None,
        *,
        feature_names: Sequence[str] = (),
        seed: int = 0,
    ) -> None:
        self.settings = settings or LambdaMartSettings()
        self.feature_names = tuple(feature_names)
        self.seed = seed
        self._booster: Any = None

    def fit(self, features: np.ndarray, gains: np.ndarray, group_sizes: Sequence[int]) -> None:
        """Train on ``features`` ``(n_pairs, n_features)`` with integer ``gains`` ``(n_pairs,)``,
        the pairs of each query contiguous, ``group_sizes`` the pairs per query in order."""
        features = np.asarray(features, dtype=np.float64)
        gains = np.asarray(gains)
        if features.ndim != 2 or len(features) != len(gains):
            raise ValueError(
                f"features must be (n_pairs, n_features) with one gain a pair; got "
                f"{features.shape} and {gains.shape}"
            )
        if sum(group_sizes) != len(gains):
            raise ValueError(f"group sizes sum to {sum(group_sizes)}, expected {len(gains)}")
        if gains.min(initial=0) < 0 or gains.max(initial=0) >= len(self.settings.label_gain):
            raise ValueError(
                f"gains must be grades in [0, {len(self.settings.label_gain) - 1}], got "
                f"{gains.min()}..{gains.max()}"
            )
        lightgbm = _lightgbm()
        settings = self.settings
        params = {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [10],
            "num_leaves": settings.leaves,
            "learning_rate": settings.learning_rate,
            "min_data_in_leaf": settings.min_data_in_leaf,
            "label_gain": list(settings.label_gain),
            "seed": self.seed,
            "deterministic": True,
            "num_threads": 1,
            "verbosity": -1,
        }
        data = lightgbm.Dataset(
            features, label=gains.astype(np.int64), group=list(group_sizes), free_raw_data=True
        )
        self._booster = lightgbm.train(params, data, num_boost_round=settings.trees)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Scores of candidates ``(n,)`` from their features ``(n, n_features)``."""
        if self._booster is None:
            raise RuntimeError("the reranker is not trained; call fit() or load() first")
        if len(features) == 0:
            return np.zeros(0)
        return np.asarray(self._booster.predict(np.asarray(features, dtype=np.float64)))

    def rerank(
        self, candidates: Sequence[tuple[str, float]], features: np.ndarray
    ) -> list[tuple[str, float]]:
        """``candidates`` reordered by score (ties keep the first stage's order)."""
        scores = self.score(features)
        order = np.argsort(-scores, kind="stable")
        return [(candidates[i][0], float(scores[i])) for i in order]

    def save(self, directory: str | Path) -> None:
        """Write the LightGBM text model and its settings into ``directory``."""
        if self._booster is None:
            raise RuntimeError("the reranker is not trained; nothing to save")
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self._booster.save_model(str(folder / MODEL_FILE))
        info = {
            "kind": "lambdamart",
            "settings": asdict(self.settings),
            "feature_names": list(self.feature_names),
            "seed": self.seed,
        }
        (folder / INFO_FILE).write_text(json.dumps(info, indent=2), "utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> LambdaMartReranker:
        """A reranker saved by :meth:`save`."""
        folder = Path(directory)
        try:
            info = json.loads((folder / INFO_FILE).read_text("utf-8"))
            settings = LambdaMartSettings(
                **{**info["settings"], "label_gain": tuple(info["settings"]["label_gain"])}
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(
                f"{folder / INFO_FILE}: not a lambdamart description: {error}"
            ) from error
        reranker = cls(settings, feature_names=info.get("feature_names", ()), seed=info["seed"])
        reranker._booster = _lightgbm().Booster(model_file=str(folder / MODEL_FILE))
        return reranker
