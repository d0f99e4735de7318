"""shopaug.tune: Optuna search over a run config (``shopaug tune``), and fine-tuning the
bi-encoder on one samples file (``shopaug train``).

Every trial is a :func:`shopaug.experiment.runner.run_experiment` run; nothing here trains on
its own beyond calling :func:`shopaug.train.fit`.
"""

from __future__ import annotations

from shopaug.tune.finetune import FinetuneResult, finetune_from_samples
from shopaug.tune.search import (
    SPLITS,
    TrialReport,
    TuneResult,
    TuneSettings,
    read_objective,
    tune,
)
from shopaug.tune.space import (
    PARAMETERS,
    SearchSpace,
    TrialChoice,
    parse_search_space,
    suggest_choice,
    trial_config,
)

__all__ = [
    "PARAMETERS",
    "SPLITS",
    "FinetuneResult",
    "SearchSpace",
    "TrialChoice",
    "TrialReport",
    "TuneResult",
    "TuneSettings",
    "finetune_from_samples",
    "parse_search_space",
    "read_objective",
    "suggest_choice",
    "trial_config",
    "tune",
]
