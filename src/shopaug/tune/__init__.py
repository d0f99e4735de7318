"""shopaug.tune: Optuna search over a run config (``shopaug tune``).

Every trial is a :func:`shopaug.experiment.runner.run_experiment` run; nothing here trains on
its own. (``shopaug train``, fine-tuning on one samples file, is
:mod:`shopaug.experiment.finetune`.) Importing this package does not load torch.
"""

from __future__ import annotations

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
    "SearchSpace",
    "TrialChoice",
    "TrialReport",
    "TuneResult",
    "TuneSettings",
    "parse_search_space",
    "read_objective",
    "suggest_choice",
    "trial_config",
    "tune",
]
