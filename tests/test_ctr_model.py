"""CTR models: position handling, down-sampling with re-calibration, the three learners and
their files (no pickles)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopaug.eval.calibration import roc_auc
from shopaug.models.ctr import (
    CtrModel,
    CtrSettings,
    FeatureEncoder,
    downsample,
    position_propensities,
    recalibrate,
)
from shopaug.models.ctr_estimators import EstimatorSettings

pytest.importorskip("sklearn")
pytest.importorskip("lightgbm")

FAST = EstimatorSettings(trees=60, epochs=3, learning_rate=0.05, threads=1)


def synthetic_impressions(n: int = 6000, seed: int = 0) -> pd.DataFrame:
    """Items 0-5; item 5 and users 'u1' click more; slot 3 is seen half as often as slot 1."""
    rng = np.random.default_rng(seed)
    item = rng.integers(0, 6, n)
    user = rng.choice(["u0", "u1"], n)
    position = rng.integers(1, 4, n)
    relevance = 0.02 + 0.10 * (item == 5) + 0.04 * (user == "u1")
    examination = np.array([0.0, 1.0, 0.75, 0.5])[position]
    click = (rng.random(n) < relevance * examination).astype(int)
    return pd.DataFrame(
        {
            "user_feature_0": user,
            "user_feature_1": "a",
            "user_feature_2": "b",
            "user_feature_3": "c",
            "campaign": "men",
            "item": [f"men:{i}" for i in item],
            "item_feature_1": [f"f{i % 2}" for i in item],
            "item_feature_2": "x",
            "item_feature_3": "y",
            "item_feature_0": item / 5.0,
            "affinity": 0.0,
            "affinity_total": 0.0,
            "position": position,
            "click": click,
            "item_id": item,
        }
    )


def test_recalibration_and_downsampling() -> None:
    # q = 0.5 learned keeping 10 % of non-clicks: p = 0.5 / (0.5 + 0.5 / 0.1) = 1 / 11
    assert recalibrate(np.array([0.5]), 0.1)[0] == pytest.approx(1 / 11)
    assert recalibrate(np.array([0.3]), 1.0)[0] == pytest.approx(0.3)
    labels = np.array([1] * 10 + [0] * 10_000)
    kept = downsample(labels, 0.2, seed=1)
    assert set(range(10)) <= set(kept.tolist())
    assert 0.18 < (kept.size - 10) / 10_000 < 0.22
    assert np.array_equal(kept, downsample(labels, 0.2, seed=1))


def test_position_propensities_hand_computed() -> None:
    table = pd.DataFrame({"position": [1] * 4 + [2] * 4, "click": [1, 1, 0, 0, 1, 0, 0, 0]})
    # pooled 3/8; slot 1: (2 + 3/8) / 5 = 0.475, slot 2: (1 + 3/8) / 5 = 0.275
    theta = position_propensities(table)
    assert theta == pytest.approx({1: 1.0, 2: 0.275 / 0.475})


def test_encoder_ignores_unseen_values() -> None:
    train = synthetic_impressions(50)
    encoder = FeatureEncoder.fit(train, with_position=True)
    unseen = train.iloc[:1].assign(item="men:99", user_feature_0="new")
    row = encoder.transform(unseen)
    assert row.shape == (1, encoder.width)
    assert row[:, : encoder.width - 3].sum() == 8  # 9 categorical + slot, two unseen


@pytest.mark.parametrize("model", ["logistic", "lightgbm", "neural"])
def test_learners_rank_and_round_trip(model: str, tmp_path: Path) -> None:
    train, test = synthetic_impressions(seed=0), synthetic_impressions(3000, seed=1)
    fitted = CtrModel.fit(train, CtrSettings(model=model, estimator=FAST))
    predicted = fitted.predict(test)
    assert roc_auc(labels=test["click"].to_numpy(), scores=predicted) > 0.65
    fitted.save(tmp_path)
    assert not list(tmp_path.glob("*.pkl")) and (tmp_path / "ctr-model.json").exists()
    np.testing.assert_allclose(CtrModel.load(tmp_path).predict(test), predicted, rtol=1e-6)


def test_downsampled_model_is_recalibrated_to_the_base_rate() -> None:
    train = synthetic_impressions(20_000, seed=2)
    rate = train["click"].mean()
    full = CtrModel.fit(train, CtrSettings(model="logistic"))
    sampled = CtrModel.fit(train, CtrSettings(model="logistic", negative_rate=0.1))
    assert full.predict(train).mean() == pytest.approx(rate, rel=0.05)
    assert sampled.predict(train).mean() == pytest.approx(rate, rel=0.15)
    raw = sampled.estimator.predict(sampled.encoder.transform(train)).mean()
    assert raw > 4 * rate  # without the correction it would be far too high


def test_position_modes() -> None:
    train = synthetic_impressions(20_000, seed=3)
    with_feature = CtrModel.fit(train, CtrSettings(model="logistic", position="feature"))
    slots = [with_feature.predict(train, position=k).mean() for k in (1, 2, 3)]
    assert slots[0] > slots[1] > slots[2]  # the slot effect is learned, not the ads'
    ipw = CtrModel.fit(train, CtrSettings(model="logistic", position="ipw"))
    assert ipw.propensities[1] == 1.0 and ipw.propensities[3] < 0.8
    at_one, at_three = ipw.predict(train, position=1), ipw.predict(train, position=3)
    np.testing.assert_allclose(at_three, at_one * ipw.propensities[3])
    with pytest.raises(ValueError, match="position"):
        CtrSettings(position="slot")
    with pytest.raises(ValueError, match="negative_rate"):
        CtrSettings(negative_rate=0.0)


def test_feature_sets_and_the_item_position_cross(tmp_path: Path) -> None:
    train = synthetic_impressions(3000, seed=4)
    encoder = FeatureEncoder.fit(train, with_position=True, features="item*position")
    # 6 items, 3 slots, 18 (item, slot) pairs; no numeric column in this set
    assert [len(v) for v in encoder.vocabulary.values()] == [6, 18, 3]
    assert encoder.width == 27 and "men:5*3" in encoder.vocabulary["item*position"]
    row = encoder.transform(train.iloc[:1])
    assert row.nnz == 3  # the item, the pair and the slot
    model = CtrModel.fit(train, CtrSettings(model="logistic", features="item*position"))
    again = CtrModel.load(model.save(tmp_path / "model"))
    np.testing.assert_allclose(again.predict(train), model.predict(train))
    with pytest.raises(ValueError, match="features"):
        CtrSettings(features="everything")


def test_fit_on_rows_encoded_by_a_whole_log_encoder_predicts_the_same() -> None:
    log = synthetic_impressions(4000, seed=5)
    train = log.iloc[:2500].reset_index(drop=True)
    settings = CtrSettings(model="logistic")
    plain = CtrModel.fit(train, settings)
    encoder = FeatureEncoder.fit(log, with_position=True)
    shared = CtrModel.fit(train, settings, encoder=encoder, features=encoder.transform(log)[:2500])
    expected = plain.predict(log)
    np.testing.assert_allclose(shared.predict(log), expected, rtol=1e-4)
    np.testing.assert_allclose(
        shared.predict_encoded(encoder.transform(log), log["position"].to_numpy()),
        expected,
        rtol=1e-4,
    )
