"""The training loop: from training groups (texts) to a model folder, resumable exactly.

``fit(model, examples, TrainConfig(...), run_dir=...)`` trains any ``nn.Module`` that is an
:class:`EmbeddingModel` (bi-encoder) or a :class:`PairScoringModel` (cross-encoder); it does
not know where the examples came from.
"""

from __future__ import annotations

from shopaug.train.config import TrainConfig, TrainingExample
from shopaug.train.loop import StepInfo, TrainResult, epoch_order, fit, linear_schedule
from shopaug.train.tracking import MetricsLogger, TensorBoardLogger
from shopaug.train.trainable import (
    CandidateBatch,
    EmbeddingModel,
    PairScoringModel,
    build_candidates,
    score_batch,
)

__all__ = [
    "CandidateBatch",
    "EmbeddingModel",
    "MetricsLogger",
    "PairScoringModel",
    "StepInfo",
    "TensorBoardLogger",
    "TrainConfig",
    "TrainResult",
    "TrainingExample",
    "build_candidates",
    "epoch_order",
    "fit",
    "linear_schedule",
    "score_batch",
]
