"""The training loop: from training groups (texts) to a model folder, resumable exactly.

``fit(model, examples, TrainConfig(...), run_dir=...)`` trains any ``nn.Module`` that is an
:class:`EmbeddingModel` (bi-encoder) or a :class:`PairScoringModel` (cross-encoder); it does
not know where the examples came from.

The names below are imported on first use (PEP 562), so that ``import shopaug.train.config``
(settings and training groups, no torch) does not load torch; ``from shopaug.train import fit``
does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shopaug.train.config import TrainConfig, TrainingExample
    from shopaug.train.loop import StepInfo, TrainResult, epoch_order, fit, linear_schedule
    from shopaug.train.sampling import NegativeSampling
    from shopaug.train.tracking import MetricsLogger, TensorBoardLogger
    from shopaug.train.trainable import (
        CandidateBatch,
        EmbeddingModel,
        PairScoringModel,
        build_candidates,
        score_batch,
    )

#: public name -> the submodule that defines it
_EXPORTS = {
    "CandidateBatch": "shopaug.train.trainable",
    "EmbeddingModel": "shopaug.train.trainable",
    "MetricsLogger": "shopaug.train.tracking",
    "NegativeSampling": "shopaug.train.sampling",
    "PairScoringModel": "shopaug.train.trainable",
    "StepInfo": "shopaug.train.loop",
    "TensorBoardLogger": "shopaug.train.tracking",
    "TrainConfig": "shopaug.train.config",
    "TrainResult": "shopaug.train.loop",
    "TrainingExample": "shopaug.train.config",
    "build_candidates": "shopaug.train.trainable",
    "epoch_order": "shopaug.train.loop",
    "fit": "shopaug.train.loop",
    "linear_schedule": "shopaug.train.loop",
    "score_batch": "shopaug.train.trainable",
}

__all__ = [
    "CandidateBatch",
    "EmbeddingModel",
    "MetricsLogger",
    "NegativeSampling",
    "PairScoringModel",
    "StepInfo",
    "TensorBoardLogger",
    "TrainConfig",
    "TrainResult",
    "TrainingExample",
    "build_candidates",
    "epoch_order",
    "fit",
    "fit_groups",
    "linear_schedule",
    "score_batch",
]


def fit_groups(model: Any, groups: Any, config: TrainConfig, **options: Any) -> Any:
    """Train a query tower on query groups with the loop ``config`` asks for: DP-SGD
    (:func:`shopaug.train.dp.fit_query_groups_private`) when ``config.privacy.enabled``, else
    :func:`shopaug.train.grouped.fit_query_groups`; ``options`` go to that loop."""
    if config.privacy.enabled:
        from shopaug.train.dp import fit_query_groups_private

        return fit_query_groups_private(model, groups, config, **options)
    from shopaug.train.grouped import fit_query_groups

    return fit_query_groups(model, groups, config, **options)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
