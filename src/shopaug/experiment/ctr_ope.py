"""Off-policy evaluation as the Open Bandit Pipeline publishes it: the Bernoulli Thompson
sampling (bts) policy's click rate estimated from the uniform-random logs of a campaign, against
its on-policy click rate in the bts logs (obp's ``examples/obd/evaluate_off_policy_estimators.py``
with ``--evaluation_policy bts --behavior_policy random``).

One run estimates from the whole random log; each bootstrap run from a resample of its rounds,
drawn as obp's ``OpenBanditDataset.sample_bootstrap_bandit_feedback(random_state=run)`` draws it,
so that obp's numbers over the same resamples differ from these only by the reward model. The
estimators are :func:`shopaug.eval.off_policy.policy_values` (IPS, SNIPS, DM, DR, DR-OS and
Switch-DR with SLOPE); the reward model of DM and the DR family is a shopaug
:class:`~shopaug.models.ctr.CtrModel` (logistic regression over the one-hot user and item
features, the affinities and the slot by default), cross-fitted over ``folds`` folds of the
rounds as obp's ``RegressionModel.fit_predict(n_folds=3)`` is: every round's ``q`` comes from
the model that did not see it. The score is obp's relative estimation error
``|V_hat - V| / V``.

The evaluation policy is an input, ``action_dist`` ``(n_items, n_slots)``: the probability that
the bts policy shows item ``a`` at slot ``k`` (the same in every round, a context-free policy).
For the Open Bandit Dataset it is what obp's ``BernoulliTS(is_zozotown_prior=True,
campaign=...).compute_batch_action_dist(n_sim=...)`` computes from the prior ZOZOTOWN served
with; ``benchmarks/ctr.py`` takes it from obp and runs obp's own pipeline beside this one.

Example:
    >>> result = bts_from_random(random_log, truth, action_dist)  # doctest: +SKIP
    >>> result["single"]["relative_error"]["dr"]  # doctest: +SKIP
    0.13
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shopaug.data.open_bandit import BanditLog, candidate_table, impression_table
from shopaug.eval import off_policy
from shopaug.models.ctr import CtrModel, CtrSettings, FeatureEncoder

logger = logging.getLogger(__name__)

N_SLOTS = 3


@dataclass(frozen=True)
class OpeBenchmarkSettings:
    """How the benchmark runs.

    Attributes:
        runs: Bootstrap runs (obp's ``--n_runs``; its published table uses 30).
        folds: Cross-fitting folds of the reward model (obp's ``n_folds=3``).
        reward_model: The :class:`CtrModel` that gives ``q``.
        lambdas: Candidates of DR-OS and Switch-DR (obp's example's).
        delta: SLOPE's confidence parameter (obp's default 0.1).
        seed: Seed of the fold assignment.
    """

    runs: int = 30
    folds: int = 3
    reward_model: CtrSettings = field(default_factory=CtrSettings)
    lambdas: tuple[float, ...] = off_policy.OBP_LAMBDAS
    delta: float = 0.1
    seed: int = 12345


def bootstrap_rows(rounds: int, run: int) -> np.ndarray:
    """The rows of bootstrap run ``run``: ``rounds`` draws with replacement, the draw of obp's
    ``sample_bootstrap_bandit_feedback(random_state=run)`` (a legacy ``RandomState``, kept for
    that reason)."""
    return np.random.RandomState(run).choice(np.arange(rounds), size=rounds, replace=True)


class EncodedLog:
    """One log's impressions and every (context, item, slot) candidate, encoded once by an
    encoder fitted on the whole log, so that each fold of each run only fits and predicts."""

    def __init__(self, log: BanditLog, settings: CtrSettings) -> None:
        self.log = log
        self.settings = settings
        self.table = impression_table(log)
        self.encoder = FeatureEncoder.fit(
            self.table, with_position=settings.position == "feature", features=settings.features
        )
        self.impressions = self.encoder.transform(self.table)  # (n, width)
        # (n * n_items, width) per slot, row i * n_items + a: item a in context i
        self.candidates = [
            self.encoder.transform(candidate_table(log, position=slot + 1))
            for slot in range(N_SLOTS)
        ]

    def reward_estimates(self, rows: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
        """Cross-fitted ``q`` of the rounds ``rows`` (``(m,)`` indices of the log, repeats
        allowed): ``(m, n_items, n_slots)``, each round predicted by the model fitted on the
        other folds."""
        n_items = self.log.n_items
        fold_of = np.random.default_rng(seed).permutation(rows.size) % folds
        q = np.empty((rows.size, n_items, N_SLOTS))
        for fold in range(folds):
            train, held = rows[fold_of != fold], np.flatnonzero(fold_of == fold)
            model = CtrModel.fit(
                self.table.iloc[train].reset_index(drop=True),
                self.settings,
                encoder=self.encoder,
                features=self.impressions[train],
            )
            contexts = rows[held]
            for slot in range(N_SLOTS):
                # every context at once (a sparse product), then the held-out rounds' rows
                everything = model.predict_encoded(
                    self.candidates[slot], np.full(self.candidates[slot].shape[0], slot + 1)
                ).reshape(-1, n_items)  # (n, n_items)
                q[held, :, slot] = everything[contexts]
        return q

    def policy_values(
        self,
        rows: np.ndarray,
        action_dist: np.ndarray,
        settings: OpeBenchmarkSettings,
        seed: int,
    ) -> off_policy.PolicyValues:
        """Every estimator's value of the context-free ``action_dist`` ``(n_items, n_slots)``
        from the rounds ``rows``."""
        frame = self.log.impressions
        return off_policy.policy_values(
            action_dist=np.broadcast_to(action_dist, (rows.size, *action_dist.shape)),
            actions=frame["item_id"].to_numpy()[rows],
            slots=frame["position"].to_numpy()[rows] - 1,
            rewards=frame["click"].to_numpy()[rows],
            propensities=frame["propensity_score"].to_numpy()[rows],
            estimated_rewards=self.reward_estimates(rows, folds=settings.folds, seed=seed),
            lambdas=settings.lambdas,
            delta=settings.delta,
        )


def relative_errors(values: dict[str, float], truth: float) -> dict[str, float]:
    """obp's relative estimation error ``|V_hat - V| / V`` of each estimate."""
    return {name: abs(value - truth) / truth for name, value in values.items()}


def summarize_runs(errors: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation (``n - 1``, as pandas' ``describe`` in obp's example) of
    each estimator's relative error over the runs."""
    table = pd.DataFrame(errors)
    return {
        name: {"mean": float(table[name].mean()), "std": float(table[name].std())}
        for name in table.columns
    }


def bts_from_random(
    random_log: BanditLog,
    truth: float,
    action_dist: np.ndarray,
    settings: OpeBenchmarkSettings | None = None,
) -> dict[str, Any]:
    """The benchmark for one campaign.

    Args:
        random_log: The campaign's uniform-random log (the logging policy).
        truth: The bts policy's on-policy click rate (the mean click of its own log).
        action_dist: ``(n_items, n_slots)``, the bts policy's probability of each item at
            each slot.
        settings: Runs, folds, the reward model, the SLOPE candidates.

    Returns:
        ``{"truth", "rounds", "single": {"values", "relative_error", "lambdas"},
        "bootstrap": {"runs", "relative_error": {name: {"mean", "std"}}, "per_run": [...]}}``.
    """
    settings = settings or OpeBenchmarkSettings()
    dist = np.asarray(action_dist, dtype=np.float64)
    if dist.shape != (random_log.n_items, N_SLOTS):
        raise ValueError(
            f"action_dist has shape {dist.shape}; expected ({random_log.n_items}, {N_SLOTS})"
        )
    encoded = EncodedLog(random_log, settings.reward_model)
    rounds = len(random_log.impressions)
    whole = encoded.policy_values(np.arange(rounds), dist, settings, seed=settings.seed)
    per_run = []
    for run in range(settings.runs):
        estimate = encoded.policy_values(
            bootstrap_rows(rounds, run), dist, settings, seed=settings.seed + 1 + run
        )
        per_run.append(relative_errors(estimate.values, truth))
        logger.info(
            "ope benchmark %s, run %d: DR relative error %.3f",
            random_log.name,
            run,
            per_run[-1]["dr"],
        )
    return {
        "truth": truth,
        "rounds": rounds,
        "single": {
            "values": whole.values,
            "relative_error": relative_errors(whole.values, truth),
            "lambdas": whole.lambdas,
        },
        "bootstrap": {
            "runs": settings.runs,
            "relative_error": summarize_runs(per_run) if per_run else {},
            "per_run": per_run,
        },
    }


__all__ = [
    "EncodedLog",
    "OpeBenchmarkSettings",
    "bootstrap_rows",
    "bts_from_random",
    "relative_errors",
    "summarize_runs",
]
