"""Off-policy evaluation of a slate policy from logged bandit feedback: IPS, SNIPS, DM, DR,
DR with optimistic shrinkage and Switch-DR.

Each logged round ``i`` shows item ``a_i`` at slot ``k_i`` (0-based) to a context ``x_i``,
chosen by the logging policy with probability ``pi_b_i`` (the propensity), and observes a click
``r_i``. An evaluation policy is given as ``action_dist``, shape ``(n, n_items, n_slots)``:
``action_dist[i, a, k] = pi_e(a | x_i, k)``, each slot a distribution over items. Slots are
evaluated independently, as the Open Bandit Pipeline (``obp``) does for the Open Bandit
Dataset, and the policy value is the expected click per impression:

* importance weight ``w_i = pi_e(a_i | x_i, k_i) / pi_b_i``;
* IPS: ``V = mean_i w_i r_i`` (Horvitz and Thompson 1952);
* self-normalised IPS: ``V = sum_i w_i r_i / sum_i w_i`` (Swaminathan and Joachims 2015);
* direct method: ``V = mean_i sum_a pi_e(a | x_i, k_i) q(x_i, a, k_i)`` with a reward model
  ``q`` (its click probability of every item at every slot);
* doubly robust: ``V = mean_i [sum_a pi_e(a | x_i, k_i) q(x_i, a, k_i)
  + w_i (r_i - q(x_i, a_i, k_i))]`` (Dudik et al. 2011);
* DR with optimistic shrinkage (DR-OS): DR with ``w_i`` replaced by
  ``lambda w_i / (w_i^2 + lambda)`` (Su et al. 2020);
* Switch-DR: DR with ``w_i`` replaced by ``w_i [w_i <= lambda]``: rounds whose weight exceeds
  ``lambda`` fall back on the model (Wang et al. 2017).

DR-OS and Switch-DR choose ``lambda`` from :data:`OBP_LAMBDAS` on the log itself with SLOPE
(Su et al. 2020, in the form of Tucker and Lee 2021: :func:`slope_choice`), as obp's
``DoublyRobustWithShrinkageTuning`` and ``SwitchDoublyRobustTuning`` do by default;
:func:`policy_values` returns every estimator's value.

Intervals are percentile bootstraps over logged rounds (SNIPS recomputes its ratio in each
resample). The tests check hand-computed values on tiny logs and the same numbers as ``obp``.

Example:
    >>> import numpy as np
    >>> dist = uniform_policy(rounds=4, n_items=2, n_slots=1)
    >>> weights = importance_weights(action_dist=dist, actions=np.array([0, 1, 0, 1]),
    ...     slots=np.zeros(4, dtype=int), propensities=np.array([0.5, 0.5, 0.25, 0.75]))
    >>> weights.tolist()
    [1.0, 1.0, 2.0, 0.6666666666666666]
    >>> ips(rewards=np.array([1, 0, 1, 0]), weights=weights)
    0.75
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ESTIMATORS = ("ips", "snips", "dr")
#: Every estimator of :func:`policy_values`, in the order tables show them.
POLICY_VALUE_ESTIMATORS = ("ips", "snips", "dm", "dr", "dr-os", "switch-dr")
#: The candidate ``lambda`` of DR-OS and Switch-DR in obp's Open Bandit example
#: (``examples/obd/evaluate_off_policy_estimators.py``).
OBP_LAMBDAS = (10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, float("inf"))


def _check_log(
    action_dist: np.ndarray, actions: np.ndarray, slots: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dist = np.asarray(action_dist, dtype=np.float64)
    a = np.asarray(actions)
    k = np.asarray(slots)
    if dist.ndim != 3:
        raise ValueError(f"action_dist must have shape (n, n_items, n_slots), got {dist.shape}")
    n, n_items, n_slots = dist.shape
    if a.shape != (n,) or k.shape != (n,):
        raise ValueError(f"actions and slots must have shape ({n},), got {a.shape} and {k.shape}")
    if ((a < 0) | (a >= n_items)).any():
        raise ValueError(f"actions must be item indices 0..{n_items - 1}")
    if ((k < 0) | (k >= n_slots)).any():
        raise ValueError(f"slots must be 0-based slot indices 0..{n_slots - 1}")
    if (dist < 0).any() or not np.allclose(dist.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("action_dist[i, :, k] must be a probability distribution over items")
    return dist, a.astype(np.int64), k.astype(np.int64)


def importance_weights(
    *,
    action_dist: np.ndarray,
    actions: np.ndarray,
    slots: np.ndarray,
    propensities: np.ndarray,
) -> np.ndarray:
    """``w_i = pi_e(a_i | x_i, k_i) / pi_b_i``, shape ``(n,)``.

    Raises:
        ValueError: Shapes disagree, an index is out of range, a slot of ``action_dist`` is not
            a distribution, or a propensity is not in (0, 1].
    """
    dist, a, k = _check_log(action_dist, actions, slots)
    pscore = np.asarray(propensities, dtype=np.float64)
    if pscore.shape != a.shape:
        raise ValueError(f"propensities must have shape {a.shape}, got {pscore.shape}")
    if ((pscore <= 0) | (pscore > 1)).any():
        raise ValueError("propensities must be in (0, 1]")
    return dist[np.arange(a.size), a, k] / pscore


def ips_terms(*, rewards: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-round IPS terms ``w_i r_i``, shape ``(n,)``."""
    return np.asarray(weights, dtype=np.float64) * np.asarray(rewards, dtype=np.float64)


def ips(*, rewards: np.ndarray, weights: np.ndarray) -> float:
    """Inverse propensity scoring: ``mean_i w_i r_i``."""
    return float(ips_terms(rewards=rewards, weights=weights).mean())


def snips(*, rewards: np.ndarray, weights: np.ndarray) -> float:
    """Self-normalised IPS: ``sum_i w_i r_i / sum_i w_i`` (0 when every weight is 0)."""
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum()
    return float((w * np.asarray(rewards, dtype=np.float64)).sum() / total) if total > 0 else 0.0


def dr_terms(
    *,
    rewards: np.ndarray,
    weights: np.ndarray,
    action_dist: np.ndarray,
    estimated_rewards: np.ndarray,
    actions: np.ndarray,
    slots: np.ndarray,
) -> np.ndarray:
    """Per-round doubly robust terms, shape ``(n,)``.

    Args:
        estimated_rewards: ``q(x_i, a, k)``, shape ``(n, n_items, n_slots)`` like
            ``action_dist``: the reward model's click probability of every item at every slot.
    """
    dist, a, k = _check_log(action_dist, actions, slots)
    q = np.asarray(estimated_rewards, dtype=np.float64)
    if q.shape != dist.shape:
        raise ValueError(f"estimated_rewards must have shape {dist.shape}, got {q.shape}")
    direct = dm_terms(action_dist=dist, estimated_rewards=q, slots=k)  # (n,)
    factual = q[np.arange(a.size), a, k]  # (n,)
    return direct + np.asarray(weights, dtype=np.float64) * (
        np.asarray(rewards, dtype=np.float64) - factual
    )


def dm_terms(
    *, action_dist: np.ndarray, estimated_rewards: np.ndarray, slots: np.ndarray
) -> np.ndarray:
    """Per-round direct-method terms ``sum_a pi_e(a | x_i, k_i) q(x_i, a, k_i)``, shape ``(n,)``.

    Args:
        action_dist: ``(n, n_items, n_slots)``, the evaluation policy.
        estimated_rewards: ``q``, the same shape.
        slots: ``(n,)`` the logged 0-based slots.
    """
    dist = np.asarray(action_dist, dtype=np.float64)
    q = np.asarray(estimated_rewards, dtype=np.float64)
    if q.shape != dist.shape:
        raise ValueError(f"estimated_rewards must have shape {dist.shape}, got {q.shape}")
    k = np.asarray(slots, dtype=np.int64)
    rows = np.arange(k.size)
    return (dist[rows, :, k] * q[rows, :, k]).sum(axis=1)


def shrunk_weights(weights: np.ndarray, lambda_: float) -> np.ndarray:
    """DR-OS weights ``lambda w / (w^2 + lambda)`` (``w`` itself for ``lambda = inf``)."""
    w = np.asarray(weights, dtype=np.float64)
    if lambda_ < 0:
        raise ValueError(f"lambda is {lambda_}; expected a number >= 0")
    return w if np.isinf(lambda_) else lambda_ * w / (w**2 + lambda_)


def switched_weights(weights: np.ndarray, lambda_: float) -> np.ndarray:
    """Switch-DR weights ``w [w <= lambda]``: rounds above ``lambda`` keep only the model."""
    w = np.asarray(weights, dtype=np.float64)
    if lambda_ < 0:
        raise ValueError(f"lambda is {lambda_}; expected a number >= 0")
    return w * (w <= lambda_)


def student_t_lower_bound(values: np.ndarray, *, delta: float) -> float:
    """The ``1 - delta`` lower confidence bound of the mean of ``values`` by Student's t:
    ``mean - t_{n-1}(1 - delta) * std / sqrt(n)`` (``std`` with ``n - 1``; Thomas et al. 2015)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.size < 2 or not 0 < delta < 1:
        raise ValueError("a t bound needs at least 2 values and delta in (0, 1)")
    spread = np.sqrt(x.var() / (x.size - 1)) * stats.t(x.size - 1).ppf(1.0 - delta)
    return float(x.mean() - spread)


def slope_choice(candidates: Sequence[np.ndarray], *, delta: float = 0.1) -> int:
    """SLOPE (Su et al. 2020; the SLOPE++ form of Tucker and Lee 2021, as obp implements it):
    the index of the per-round terms to use among ``candidates``.

    Each candidate has a value ``theta`` (the mean of its terms) and a width ``c`` (mean minus
    its :func:`student_t_lower_bound`). Candidates are visited from the widest to the narrowest;
    each is accepted while ``|theta_j - theta_i| <= c_i + (sqrt(6) - 1) c_j`` for every
    accepted ``j``; the last accepted one is chosen. Ties in width are broken as obp breaks them
    (``numpy.argsort`` order, reversed), so give the candidates in obp's order.
    """
    if not candidates:
        raise ValueError("SLOPE needs at least one candidate")
    factor = np.sqrt(6) - 1
    thetas = [float(np.mean(terms)) for terms in candidates]
    widths = [
        float(np.mean(terms)) - student_t_lower_bound(terms, delta=delta) for terms in candidates
    ]
    order = np.argsort(widths)[::-1]
    accepted_theta: list[float] = []
    accepted_width: list[float] = []
    for position, index in enumerate(order):
        theta, width = thetas[index], widths[index]
        if (
            accepted_theta
            and not (
                np.abs(np.array(accepted_theta) - theta)
                <= width + factor * np.array(accepted_width)
            ).all()
        ):
            return int(order[position - 1])
        accepted_theta.append(theta)
        accepted_width.append(width)
    return int(order[-1])


@dataclass(frozen=True)
class PolicyValues:
    """Point estimates of one evaluation policy from one log.

    Attributes:
        values: Estimator name (:data:`POLICY_VALUE_ESTIMATORS`) -> estimated click rate.
        lambdas: ``dr-os`` and ``switch-dr`` -> the ``lambda`` SLOPE chose.
        mean_weight: Mean importance weight (near 1 when the policies overlap well).
    """

    values: dict[str, float]
    lambdas: dict[str, float]
    mean_weight: float


def policy_values(
    *,
    action_dist: np.ndarray,
    actions: np.ndarray,
    slots: np.ndarray,
    rewards: np.ndarray,
    propensities: np.ndarray,
    estimated_rewards: np.ndarray,
    lambdas: Sequence[float] = OBP_LAMBDAS,
    delta: float = 0.1,
) -> PolicyValues:
    """IPS, SNIPS, DM, DR, DR-OS and Switch-DR of ``action_dist`` (no intervals: see
    :func:`evaluate_policy` for those). ``lambda`` of DR-OS and Switch-DR is chosen by
    :func:`slope_choice` among ``lambdas`` (DR-OS visits them in increasing order, Switch-DR in
    decreasing order, as obp does).
    """
    weights = importance_weights(
        action_dist=action_dist, actions=actions, slots=slots, propensities=propensities
    )
    reward = np.asarray(rewards, dtype=np.float64)
    common = dict(
        rewards=reward,
        action_dist=action_dist,
        estimated_rewards=estimated_rewards,
        actions=actions,
        slots=slots,
    )
    values = {
        "ips": ips(rewards=reward, weights=weights),
        "snips": snips(rewards=reward, weights=weights),
        "dm": float(
            dm_terms(
                action_dist=action_dist, estimated_rewards=estimated_rewards, slots=slots
            ).mean()
        ),
        "dr": float(dr_terms(weights=weights, **common).mean()),
    }
    chosen = {}
    for name, transform, ordered in (
        ("dr-os", shrunk_weights, sorted(lambdas)),
        ("switch-dr", switched_weights, sorted(lambdas, reverse=True)),
    ):
        terms = [dr_terms(weights=transform(weights, value), **common) for value in ordered]
        best = slope_choice(terms, delta=delta)
        values[name] = float(terms[best].mean())
        chosen[name] = float(ordered[best])
    return PolicyValues(values, chosen, float(weights.mean()))


@dataclass(frozen=True)
class Estimate:
    """A policy value with its percentile bootstrap interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float | list[float]]:
        return {"value": self.value, "ci95": [self.low, self.high]}


def bootstrap_estimate(
    numerators: np.ndarray,
    denominators: np.ndarray | None = None,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """``sum(numerators) / sum(denominators)`` (a mean without denominators) and its percentile
    bootstrap interval over rounds, resampled with replacement by a generator seeded ``seed``.
    """
    top = np.asarray(numerators, dtype=np.float64)
    bottom = np.ones_like(top) if denominators is None else np.asarray(denominators, float)
    if top.size < 2 or bottom.shape != top.shape:
        raise ValueError("a bootstrap needs at least 2 rounds and denominators of the same shape")
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples)
    for index in range(n_resamples):
        pick = rng.integers(0, top.size, top.size)
        total = bottom[pick].sum()
        values[index] = top[pick].sum() / total if total > 0 else 0.0
    total = bottom.sum()
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Estimate(float(top.sum() / total) if total > 0 else 0.0, float(low), float(high))


def evaluate_policy(
    *,
    action_dist: np.ndarray,
    actions: np.ndarray,
    slots: np.ndarray,
    rewards: np.ndarray,
    propensities: np.ndarray,
    estimated_rewards: np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Estimate]:
    """IPS, SNIPS and (with ``estimated_rewards``) DR of ``action_dist`` with intervals, plus
    ``mean_weight`` (its value should be near 1: far from it, the policies barely overlap)."""
    weights = importance_weights(
        action_dist=action_dist, actions=actions, slots=slots, propensities=propensities
    )
    terms = ips_terms(rewards=rewards, weights=weights)
    out = {
        "ips": bootstrap_estimate(terms, n_resamples=n_resamples, seed=seed),
        "snips": bootstrap_estimate(terms, weights, n_resamples=n_resamples, seed=seed),
        "mean_weight": bootstrap_estimate(weights, n_resamples=n_resamples, seed=seed),
    }
    if estimated_rewards is not None:
        doubly = dr_terms(
            rewards=rewards,
            weights=weights,
            action_dist=action_dist,
            estimated_rewards=estimated_rewards,
            actions=actions,
            slots=slots,
        )
        out["dr"] = bootstrap_estimate(doubly, n_resamples=n_resamples, seed=seed)
    return out


# --- evaluation policies ---------------------------------------------------------------------


def uniform_policy(*, rounds: int, n_items: int, n_slots: int) -> np.ndarray:
    """Every item with probability ``1 / n_items`` at every slot: ``(rounds, n_items, n_slots)``."""
    return np.full((rounds, n_items, n_slots), 1.0 / n_items)


def greedy_ranking(scores: np.ndarray, *, n_slots: int) -> np.ndarray:
    """Slot ``k`` shows the item with the ``k``-th highest score (ties: lower item index first).

    Args:
        scores: ``(rounds, n_items)`` predicted CTRs (or any scores) per context.
    """
    values = np.asarray(scores, dtype=np.float64)
    rounds, n_items = values.shape
    if n_slots > n_items:
        raise ValueError(f"n_slots {n_slots} exceeds the {n_items} items")
    order = np.argsort(-values, axis=1, kind="stable")[:, :n_slots]  # (rounds, n_slots)
    dist = np.zeros((rounds, n_items, n_slots))
    rows = np.arange(rounds)[:, None]
    dist[rows, order, np.arange(n_slots)[None, :]] = 1.0
    return dist


def softmax_policy(scores: np.ndarray, *, n_slots: int, temperature: float) -> np.ndarray:
    """The same distribution ``softmax(scores / temperature)`` over items at every slot.

    A stochastic policy that still favours high predicted CTRs: with 34 to 80 items a
    deterministic ranking matches a uniform log in 1 / n_items of the rounds, so its IPS
    estimate rests on a handful of clicks; a softmax spreads its mass and keeps more rounds.
    """
    if temperature <= 0:
        raise ValueError(f"temperature is {temperature}; expected a positive number")
    values = np.asarray(scores, dtype=np.float64) / temperature
    values = np.exp(values - values.max(axis=1, keepdims=True))
    probabilities = values / values.sum(axis=1, keepdims=True)  # (rounds, n_items)
    return np.repeat(probabilities[:, :, None], n_slots, axis=2)


__all__ = [
    "ESTIMATORS",
    "OBP_LAMBDAS",
    "POLICY_VALUE_ESTIMATORS",
    "Estimate",
    "PolicyValues",
    "bootstrap_estimate",
    "dm_terms",
    "dr_terms",
    "evaluate_policy",
    "greedy_ranking",
    "importance_weights",
    "ips",
    "ips_terms",
    "policy_values",
    "shrunk_weights",
    "slope_choice",
    "snips",
    "softmax_policy",
    "student_t_lower_bound",
    "switched_weights",
    "uniform_policy",
]
