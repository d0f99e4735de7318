"""DP-SGD for a query tower (shopaug.train.dp): epsilon recorded and checked against the exact
Gaussian mechanism, per-example clipping bounds the update, seeds decide the noise."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("opacus")

import torch
from scipy.optimize import brentq
from scipy.stats import norm
from torch import nn

from shopaug.encoders.base import HashingEncoder
from shopaug.errors import ConfigError
from shopaug.losses.multi_positive import MultiPositiveInfoNCELoss
from shopaug.models.hashing_model import HashingProjection
from shopaug.train.config import PrivacyConfig, TrainConfig
from shopaug.train.dp import (
    PRIVACY_FILE,
    fit_query_groups_private,
    own_item_masks,
    per_example_losses,
    read_privacy,
)
from shopaug.train.grouped import QueryGroup, fit_query_groups

DIM = 32


class TinyTower(nn.Module):
    """A trainable linear map over hashed query features; items hashed and frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.query = HashingProjection(DIM)
        self.items = HashingEncoder(DIM)

    def embed_queries(self, texts: Sequence[str]) -> torch.Tensor:
        return self.query.embed(texts)

    def embed_items(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.from_numpy(self.items.encode(list(texts)))

    def save(self, directory: str | Path) -> None:
        self.query.save(directory)


WORDS = ["oak", "velvet", "steel", "glass", "wool", "teak", "brass", "linen", "pine", "jute"]
THINGS = ["desk", "sofa", "lamp", "rug", "chair"]


def groups(n: int = 20) -> list[QueryGroup]:
    made = []
    for i in range(n):
        word, thing = WORDS[i % len(WORDS)], THINGS[i % len(THINGS)]
        other = THINGS[(i + 2) % len(THINGS)]
        made.append(
            QueryGroup(
                query=f"{word} {thing} {i}",
                positives=(f"{word} {thing}",),
                negatives=(f"{word} {other}", f"plain {thing} {other}"),
            )
        )
    return made


def weights(model: TinyTower) -> np.ndarray:
    return model.query.linear.weight.detach().numpy().copy()


def config(**privacy: object) -> TrainConfig:
    return TrainConfig(
        batch_size=5,
        epochs=2,
        lr=0.05,
        optimizer="sgd",
        weight_decay=0.0,
        warmup_ratio=0.0,
        privacy={"enabled": True, **privacy},
    )


def exact_gaussian_epsilon(sigma: float, steps: int, delta: float) -> float:
    """Epsilon of ``steps`` full-batch Gaussian steps (sensitivity 1): one Gaussian mechanism
    with noise sigma / sqrt(steps), inverted from Balle & Wang (2018), Theorem 8."""
    s = sigma / math.sqrt(steps)

    def excess(eps: float) -> float:
        return norm.cdf(-eps * s + 1 / (2 * s)) - math.exp(eps) * norm.cdf(-eps * s - 1 / (2 * s))

    return float(brentq(lambda eps: excess(eps) - delta, 1e-6, 200.0))


def test_a_dp_run_records_epsilon_near_its_target(tmp_path: Path) -> None:
    model = TinyTower()
    before = weights(model)
    result = fit_query_groups_private(
        model, groups(), config(target_epsilon=2.0), run_dir=tmp_path, show_progress=False
    )
    report = result.privacy
    assert report is not None
    assert result.steps == 8  # 2 epochs x ceil(20 / 5)
    assert report["steps"] == 8 and report["sample_rate"] == 0.25 and report["examples"] == 20
    assert 1.95 <= report["epsilon"] <= 2.0  # calibrated to the target, not above it
    assert report["delta"] == 1e-5 and report["accountant"] == "rdp"
    assert read_privacy(tmp_path / "model") == report
    assert json.loads((tmp_path / PRIVACY_FILE).read_text()) == report
    assert [p["epsilon"] for p in result.curve][-1] == pytest.approx(report["epsilon"])
    assert not np.allclose(weights(model), before)  # the model trained


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_full_batch_epsilon_matches_the_exact_gaussian_mechanism(
    tmp_path: Path, accountant: str
) -> None:
    # batch_size >= groups: every step sees every group (q = 1), so T steps are one Gaussian
    # mechanism with noise sigma / sqrt(T), whose exact epsilon is known.
    train = config(noise_multiplier=2.0, accountant=accountant).model_copy(
        update={"batch_size": 20, "epochs": 4}
    )
    result = fit_query_groups_private(
        TinyTower(), groups(), train, run_dir=tmp_path, show_progress=False
    )
    assert result.privacy is not None
    exact = exact_gaussian_epsilon(2.0, 4, 1e-5)
    epsilon = result.privacy["epsilon"]
    assert epsilon >= exact * 0.99  # no accountant may claim less than the truth
    if accountant == "prv":
        assert epsilon == pytest.approx(exact, rel=0.05)
    else:
        assert epsilon <= exact * 1.3  # RDP is an upper bound, close here


def clipped_mean_gradient(model: TinyTower, batch: list[QueryGroup], clip: float) -> np.ndarray:
    """Reference without Opacus: each group's gradient on its own, clipped, averaged."""
    objective = MultiPositiveInfoNCELoss(temperature=0.05)
    weight = model.query.linear.weight
    clipped = []
    for group in batch:
        loss = per_example_losses(model, [group], objective)[0]
        (gradient,) = torch.autograd.grad(loss, weight)
        clipped.append(gradient * min(1.0, clip / (float(gradient.norm()) + 1e-6)))
    return torch.stack(clipped).mean(dim=0).numpy()


@pytest.mark.parametrize("clip", [1e-3, 1e6])
def test_an_update_is_the_mean_of_clipped_per_example_gradients(
    tmp_path: Path, clip: float
) -> None:
    # no noise, every group in the one step (q = 1), first plain SGD step (momentum starts
    # at the gradient): the update is -lr * mean(clipped per-example gradients)
    train = config(noise_multiplier=0.0, max_grad_norm=clip).model_copy(
        update={"batch_size": 20, "max_steps": 1, "lr": 1.0}
    )
    model = TinyTower()
    expected = clipped_mean_gradient(TinyTower(), groups(), clip)
    before = weights(model)
    result = fit_query_groups_private(model, groups(), train, run_dir=tmp_path, show_progress=False)
    moved = weights(model) - before
    # atol: the identity's diagonal is stored in float32, one ulp of 1.0 is 1.2e-7
    np.testing.assert_allclose(moved, -expected, rtol=1e-4, atol=1e-7)
    if clip < 1:
        assert float(np.linalg.norm(moved)) <= clip * (1 + 1e-4)  # at most lr * clip
    else:
        assert float(np.linalg.norm(moved)) > 10 * 1e-3  # unclipped moves much further
    assert result.privacy is not None and result.privacy["epsilon"] is None  # no noise
    assert [point["epsilon"] for point in result.curve] == [None]
    json.loads((tmp_path / "curve.jsonl").read_text(), parse_constant=pytest.fail)


def test_the_seed_decides_the_noise(tmp_path: Path) -> None:
    def trained(seed: int, folder: str) -> np.ndarray:
        model = TinyTower()
        train = config(noise_multiplier=1.0).model_copy(update={"seed": seed, "epochs": 1})
        fit_query_groups_private(
            model, groups(), train, run_dir=tmp_path / folder, show_progress=False
        )
        return weights(model)

    np.testing.assert_array_equal(trained(3, "a"), trained(3, "b"))
    assert not np.allclose(trained(3, "c"), trained(4, "d"))


def test_fit_groups_dispatches_to_dp_and_the_plain_loop_refuses_privacy(tmp_path: Path) -> None:
    from shopaug.errors import ConfigError
    from shopaug.train import fit_groups

    train = config(noise_multiplier=1.0).model_copy(update={"epochs": 1})
    result = fit_groups(TinyTower(), groups(), train, run_dir=tmp_path, show_progress=False)
    assert result.privacy is not None and result.privacy["noise_multiplier"] == 1.0
    with pytest.raises(ConfigError, match="fit_groups"):
        fit_query_groups(TinyTower(), groups(), train, run_dir=tmp_path / "b")


def test_own_item_masks_keep_rows_apart() -> None:
    batch = [
        QueryGroup("q1", positives=("a",), negatives=("b",)),
        QueryGroup("q2", positives=("b",), negatives=("c", "a")),
    ]
    items, positive, negative, weights_ = own_item_masks(batch)
    assert items == ["a", "b", "c"]
    assert positive.tolist() == [[True, False, False], [False, True, False]]
    # q1 never sees q2's "c"; q2 sees its own "a" as a negative
    assert negative.tolist() == [[False, True, False], [True, False, True]]
    assert weights_.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


def test_bad_privacy_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="exactly one of target_epsilon"):
        PrivacyConfig(enabled=True)
    with pytest.raises(ValueError, match="exactly one of target_epsilon"):
        PrivacyConfig(enabled=True, target_epsilon=1.0, noise_multiplier=1.0)
    assert not TrainConfig().privacy.enabled


def test_full_tower_fit_refuses_privacy(tmp_path: Path) -> None:
    from shopaug.train import fit
    from shopaug.train.config import TrainingExample

    with pytest.raises(ConfigError, match="tower: query"):
        fit(
            HashingProjection(DIM),
            [TrainingExample("oak desk", "oak desk")],
            config(noise_multiplier=1.0),
            run_dir=tmp_path,
        )


def test_a_run_config_with_privacy_needs_the_query_tower() -> None:
    from shopaug.experiment.config import parse_run_config

    privacy = {"enabled": True, "target_epsilon": 8.0}
    config = parse_run_config({"tower": "query", "train": {"privacy": privacy}}, source="t.yaml")
    assert TrainConfig(**config.train).privacy.target_epsilon == 8.0
    with pytest.raises(ConfigError, match=r"t.yaml: train.privacy \(DP-SGD\) needs tower: query"):
        parse_run_config({"tower": "full", "train": {"privacy": privacy}}, source="t.yaml")
    with pytest.raises(ConfigError, match="item_adapter: false"):
        parse_run_config(
            {"tower": "query", "item_adapter": True, "train": {"privacy": privacy}},
            source="t.yaml",
        )


def test_the_manifest_carries_the_guarantee(tmp_path: Path) -> None:
    from shopaug.manifest import write_manifest

    report = {"epsilon": 7.9, "delta": 1e-5, "accountant": "rdp"}
    path = write_manifest(
        tmp_path, command="t", config={}, data={}, seeds={}, timings={}, privacy=report
    )
    assert json.loads(path.read_text())["privacy"] == report
    plain = write_manifest(tmp_path, command="t", config={}, data={}, seeds={}, timings={})
    assert "privacy" not in json.loads(plain.read_text())


class TowerWithItemModule(TinyTower):
    """A module the query side never reaches (like an item encoder that is an nn.Module)."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Linear(DIM, DIM)


def test_parameters_a_query_does_not_reach_are_frozen(tmp_path: Path) -> None:
    model = TowerWithItemModule()
    before = model.unused.weight.detach().clone()
    train = config(noise_multiplier=1.0).model_copy(update={"epochs": 1})
    result = fit_query_groups_private(model, groups(), train, run_dir=tmp_path, show_progress=False)
    assert result.privacy is not None
    assert result.privacy["trainable_parameters"] == DIM * DIM  # the query map only
    assert torch.equal(model.unused.weight, before)
