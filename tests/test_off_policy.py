"""Off-policy estimators: hand-computed values on tiny logs, policies, and the same numbers as
the Open Bandit Pipeline (``obp``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from shopaug.eval.off_policy import (
    OBP_LAMBDAS,
    bootstrap_estimate,
    dm_terms,
    dr_terms,
    evaluate_policy,
    greedy_ranking,
    importance_weights,
    ips,
    policy_values,
    shrunk_weights,
    slope_choice,
    snips,
    softmax_policy,
    student_t_lower_bound,
    switched_weights,
    uniform_policy,
)

# Four rounds, two items, two slots.
ACTIONS = np.array([0, 1, 1, 0])
SLOTS = np.array([0, 0, 1, 1])
REWARDS = np.array([1, 0, 1, 0])
PROPENSITIES = np.array([0.5, 0.25, 0.5, 0.8])
# pi_e: slot 0 prefers item 0 (0.8), slot 1 prefers item 1 (0.6), the same in every round.
POLICY = np.tile(np.array([[0.8, 0.4], [0.2, 0.6]])[None], (4, 1, 1))
# q(x, a, k): rewards the model expects, per round/item/slot
Q = np.tile(np.array([[0.5, 0.1], [0.2, 0.3]])[None], (4, 1, 1))


def test_hand_computed_ips_snips_dr() -> None:
    weights = importance_weights(
        action_dist=POLICY, actions=ACTIONS, slots=SLOTS, propensities=PROPENSITIES
    )
    # w = pi_e(a_i|k_i) / pi_b: 0.8/0.5, 0.2/0.25, 0.6/0.5, 0.4/0.8
    np.testing.assert_allclose(weights, [1.6, 0.8, 1.2, 0.5])
    assert ips(rewards=REWARDS, weights=weights) == pytest.approx((1.6 + 1.2) / 4)
    assert snips(rewards=REWARDS, weights=weights) == pytest.approx(2.8 / 4.1)
    # direct part: slot 0: 0.8*0.5 + 0.2*0.2 = 0.44; slot 1: 0.4*0.1 + 0.6*0.3 = 0.22
    # factual q: q[0,0]=0.5, q[1,0]=0.2, q[1,1]=0.3, q[0,1]=0.1
    expected = [
        0.44 + 1.6 * (1 - 0.5),
        0.44 + 0.8 * (0 - 0.2),
        0.22 + 1.2 * (1 - 0.3),
        0.22 + 0.5 * (0 - 0.1),
    ]
    terms = dr_terms(
        rewards=REWARDS,
        weights=weights,
        action_dist=POLICY,
        estimated_rewards=Q,
        actions=ACTIONS,
        slots=SLOTS,
    )
    np.testing.assert_allclose(terms, expected)


def test_uniform_policy_on_uniform_log_is_the_on_policy_mean() -> None:
    rng = np.random.default_rng(3)
    n, items = 500, 5
    actions = rng.integers(0, items, n)
    rewards = (rng.random(n) < 0.1).astype(int)
    result = evaluate_policy(
        action_dist=uniform_policy(rounds=n, n_items=items, n_slots=3),
        actions=actions,
        slots=rng.integers(0, 3, n),
        rewards=rewards,
        propensities=np.full(n, 1 / items),
        estimated_rewards=np.full((n, items, 3), 0.3),
        n_resamples=200,
    )
    for name in ("ips", "snips", "dr"):  # every weight is 1: all three equal the click rate
        assert result[name].value == pytest.approx(rewards.mean())
        assert result[name].low <= rewards.mean() <= result[name].high
    assert result["mean_weight"].value == pytest.approx(1.0)


def test_policies() -> None:
    scores = np.array([[0.1, 0.3, 0.2], [0.5, 0.5, 0.0]])
    greedy = greedy_ranking(scores, n_slots=2)
    assert greedy[0, :, 0].tolist() == [0, 1, 0] and greedy[0, :, 1].tolist() == [0, 0, 1]
    assert greedy[1, :, 0].tolist() == [1, 0, 0] and greedy[1, :, 1].tolist() == [0, 1, 0]
    soft = softmax_policy(np.log(np.array([[1.0, 3.0]])), n_slots=2, temperature=1.0)
    np.testing.assert_allclose(soft[0, :, 1], [0.25, 0.75])
    with pytest.raises(ValueError, match="exceeds"):
        greedy_ranking(scores, n_slots=4)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="propensities must be in"):
        importance_weights(
            action_dist=POLICY, actions=ACTIONS, slots=SLOTS, propensities=np.zeros(4)
        )
    with pytest.raises(ValueError, match="slots must be 0-based"):
        importance_weights(
            action_dist=POLICY, actions=ACTIONS, slots=SLOTS + 1, propensities=PROPENSITIES
        )
    with pytest.raises(ValueError, match="probability distribution"):
        importance_weights(
            action_dist=POLICY * 2, actions=ACTIONS, slots=SLOTS, propensities=PROPENSITIES
        )


def test_bootstrap_interval_is_seeded_and_covers() -> None:
    values = np.arange(10.0)
    first = bootstrap_estimate(values, n_resamples=300, seed=1)
    assert first == bootstrap_estimate(values, n_resamples=300, seed=1)
    assert first.value == 4.5 and first.low < 4.5 < first.high


def _obp_log(seed: int = 0):
    rng = np.random.default_rng(seed)
    n, items, slots = 400, 6, 3
    pscore = rng.uniform(0.05, 0.6, n)
    logits = rng.normal(size=(n, items))
    dist = softmax_policy(logits, n_slots=slots, temperature=0.7)
    q = rng.uniform(0, 0.2, (n, items, slots))
    return dict(
        action=rng.integers(0, items, n),
        position=rng.integers(0, slots, n),
        reward=(rng.random(n) < 0.15).astype(int),
        pscore=pscore,
        action_dist=dist,
        q=q,
    )


def test_same_numbers_as_obp() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ope = pytest.importorskip("obp.ope")
    log = _obp_log()
    ours = evaluate_policy(
        action_dist=log["action_dist"],
        actions=log["action"],
        slots=log["position"],
        rewards=log["reward"],
        propensities=log["pscore"],
        estimated_rewards=log["q"],
        n_resamples=200,
    )
    common = dict(
        reward=log["reward"],
        action=log["action"],
        position=log["position"],
        pscore=log["pscore"],
        action_dist=log["action_dist"],
    )
    theirs = {
        "ips": ope.InverseProbabilityWeighting().estimate_policy_value(**common),
        "snips": ope.SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**common),
        "dr": ope.DoublyRobust().estimate_policy_value(
            **common, estimated_rewards_by_reg_model=log["q"]
        ),
    }
    for name, value in theirs.items():
        assert ours[name].value == pytest.approx(value, rel=1e-12), name
    # Intervals: both percentile bootstraps over rounds, different random draws: they agree to
    # within bootstrap noise, not digit for digit.
    interval = ope.InverseProbabilityWeighting().estimate_interval(
        **common, n_bootstrap_samples=2000, random_state=0
    )
    low, high = interval["95.0% CI (lower)"], interval["95.0% CI (upper)"]
    assert ours["ips"].low == pytest.approx(low, abs=0.01)
    assert ours["ips"].high == pytest.approx(high, abs=0.01)


def test_hand_computed_dm_shrinkage_and_switch() -> None:
    # direct parts from test_hand_computed_ips_snips_dr: 0.44 at slot 0, 0.22 at slot 1
    np.testing.assert_allclose(
        dm_terms(action_dist=POLICY, estimated_rewards=Q, slots=SLOTS), [0.44, 0.44, 0.22, 0.22]
    )
    weights = np.array([1.6, 0.8, 1.2, 0.5])
    # lambda w / (w^2 + lambda) with lambda 1: 1.6/3.56, 0.8/1.64, 1.2/2.44, 0.5/1.25
    np.testing.assert_allclose(
        shrunk_weights(weights, 1.0), [1.6 / 3.56, 0.8 / 1.64, 1.2 / 2.44, 0.4]
    )
    np.testing.assert_array_equal(shrunk_weights(weights, np.inf), weights)
    np.testing.assert_array_equal(switched_weights(weights, 1.0), [0.0, 0.8, 0.0, 0.5])
    # t bound of [0, 1, 2, 3]: mean 1.5, std (n-1) 1.29099, t_3(0.9) = 1.637744
    assert student_t_lower_bound(np.arange(4.0), delta=0.1) == pytest.approx(
        1.5 - 1.637744 * 1.2909944 / 2, rel=1e-6
    )


def test_slope_keeps_the_narrowest_candidate_that_agrees_with_the_wider_ones() -> None:
    rng = np.random.default_rng(0)
    wide = rng.normal(1.0, 10.0, 400)  # unbiased, very noisy
    medium = rng.normal(1.0, 1.0, 400)  # unbiased, less noisy: consistent with the wide one
    biased = rng.normal(5.0, 0.1, 400)  # narrow but far off: rejected
    assert slope_choice([wide, medium, biased]) == 1
    assert slope_choice([wide, medium]) == 1
    assert slope_choice([wide]) == 0


def _obp_estimators(ope):
    """obp's estimators as its Open Bandit example builds them (lambdas copied: obp sorts the
    list it is given in place)."""
    return {
        "ips": ope.InverseProbabilityWeighting(),
        "snips": ope.SelfNormalizedInverseProbabilityWeighting(),
        "dm": ope.DirectMethod(),
        "dr": ope.DoublyRobust(),
        "dr-os": ope.DoublyRobustWithShrinkageTuning(lambdas=list(OBP_LAMBDAS)),
        "switch-dr": ope.SwitchDoublyRobustTuning(lambdas=list(OBP_LAMBDAS)),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_estimator_equals_obp_on_the_same_input(seed: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ope = pytest.importorskip("obp.ope")
    if not hasattr(ope, "SwitchDoublyRobustTuning"):
        pytest.skip("obp < 0.5 has no tuned DR-OS / Switch-DR (install obp 0.5.7 as documented)")
    log = _obp_log(seed)
    # heavy weights, so that shrinkage and switching change the estimate and SLOPE must choose
    log["pscore"] = np.where(np.arange(log["pscore"].size) % 7 == 0, 0.002, log["pscore"])
    ours = policy_values(
        action_dist=log["action_dist"],
        actions=log["action"],
        slots=log["position"],
        rewards=log["reward"],
        propensities=log["pscore"],
        estimated_rewards=log["q"],
    )
    arrays = dict(
        reward=log["reward"],
        action=log["action"],
        position=log["position"],
        pscore=log["pscore"],
        action_dist=log["action_dist"],
        estimated_rewards_by_reg_model=log["q"],
    )
    for name, estimator in _obp_estimators(ope).items():
        assert ours.values[name] == pytest.approx(
            estimator.estimate_policy_value(**arrays), abs=1e-9, rel=0
        ), name
        if name in ours.lambdas:
            assert ours.lambdas[name] == estimator.best_hyperparam, name
    # the planted heavy weights make the two tuned estimators differ from plain DR
    assert ours.values["switch-dr"] != pytest.approx(ours.values["dr"], abs=1e-6)
