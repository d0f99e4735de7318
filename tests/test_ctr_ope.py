"""The OPE benchmark as obp publishes it (``experiment.ctr_ope``): resamples, cross-fitting and
known answers on a small folder written by the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ctr_fixtures import write_bandit_data
from shopaug.data.open_bandit import load_open_bandit
from shopaug.experiment.ctr_ope import (
    EncodedLog,
    OpeBenchmarkSettings,
    bootstrap_rows,
    bts_from_random,
)
from shopaug.models.ctr import CtrSettings

pytest.importorskip("sklearn")


def test_bootstrap_rows_are_obps_resamples() -> None:
    rows = bootstrap_rows(50, 3)
    assert rows.shape == (50,) and rows.min() >= 0 and rows.max() < 50
    np.testing.assert_array_equal(rows, bootstrap_rows(50, 3))
    # obp's sample_bootstrap_bandit_feedback(random_state=3): RandomState(3).choice
    np.testing.assert_array_equal(rows, np.random.RandomState(3).choice(50, size=50))


def test_uniform_policy_on_its_own_log_has_no_error_for_ips(tmp_path: Path) -> None:
    log = load_open_bandit("random", "men", root=write_bandit_data(tmp_path / "data"))
    truth = float(log.impressions["click"].mean())
    uniform = np.full((log.n_items, 3), 1.0 / log.n_items)
    settings = OpeBenchmarkSettings(runs=3, reward_model=CtrSettings(model="logistic"))
    result = bts_from_random(log, truth, uniform, settings)
    single = result["single"]
    # every weight is 1: IPS and SNIPS are the logged click rate, the truth here
    assert single["relative_error"]["ips"] == pytest.approx(0.0, abs=1e-12)
    assert single["relative_error"]["snips"] == pytest.approx(0.0, abs=1e-12)
    assert set(single["values"]) == {"ips", "snips", "dm", "dr", "dr-os", "switch-dr"}
    # DR with weight 1 everywhere: mean of q over items + (r - q(a_i)); its error stays small
    assert single["relative_error"]["dr"] < 0.5
    assert len(result["bootstrap"]["per_run"]) == 3
    assert result["bootstrap"]["relative_error"]["ips"]["mean"] > 0  # resamples move IPS
    with pytest.raises(ValueError, match="action_dist"):
        bts_from_random(log, truth, uniform[:, :2], settings)


def test_reward_estimates_are_cross_fitted(tmp_path: Path) -> None:
    log = load_open_bandit("random", "men", root=write_bandit_data(tmp_path / "data"))
    encoded = EncodedLog(log, CtrSettings(model="logistic"))
    rows = np.arange(len(log.impressions))
    q = encoded.reward_estimates(rows, folds=3, seed=0)
    assert q.shape == (rows.size, log.n_items, 3)
    assert ((q > 0) & (q < 1)).all()
    # another fold assignment, other models: the held-out predictions change
    assert not np.allclose(q, encoded.reward_estimates(rows, folds=3, seed=1))
