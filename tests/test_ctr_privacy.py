"""DP-SGD for the neural CTR model: the ``privacy`` section of a ``task: ctr`` config trains it
through Opacus, the guarantee lands in metrics.json, model/privacy.json and the manifest, an
update is the mean of clipped per-row gradients, and bad settings are named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from ctr_fixtures import write_bandit_data
from shopaug.errors import ConfigError
from shopaug.experiment.tasks import load_task

pytest.importorskip("torch")
pytest.importorskip("opacus")

import torch

from shopaug.train.config import PrivacyConfig
from shopaug.train.dp_sgd import IMPRESSION_UNIT, PRIVACY_FILE, PrivateRowTraining


def _config(tmp_path: Path, **overrides: object) -> Path:
    body = {
        "task": "ctr",
        "data_dir": str(write_bandit_data(tmp_path / "data")),
        "campaigns": ["men"],
        "models": ["neural"],
        "positions": ["feature"],
        "negative_rates": [1.0],
        "bootstrap": 20,
        "estimator": {"epochs": 2, "batch_size": 64, "learning_rate": 0.05},
        **overrides,
    }
    path = tmp_path / "ctr.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_a_private_ctr_run_records_its_epsilon(tmp_path: Path) -> None:
    privacy = {"enabled": True, "target_epsilon": 4.0, "delta": 1e-4, "max_grad_norm": 1.0}
    task = load_task(str(_config(tmp_path, privacy=privacy)))
    out = tmp_path / "run"
    result = task.module.run(task.config, out, "shopaug run ctr.yaml")
    (variant,) = [row for row in result["variants"] if row["kind"] == "model"]
    assert variant["name"] == "neural / position feature / all impressions / DP-SGD eps 4"
    report = variant["privacy"]
    # 672 training impressions, expected batch 64: q = 64 / 672, 2 epochs of 11 steps
    assert report["examples"] == 672 and report["steps"] == 22
    assert report["sample_rate"] == pytest.approx(64 / 672)
    assert 0.9 * 4.0 <= report["epsilon"] <= 4.0  # calibrated to the target, never above
    assert report["noise_multiplier"] > 0 and report["delta"] == 1e-4
    assert report["unit"] == IMPRESSION_UNIT
    served = json.loads((out / "model" / PRIVACY_FILE).read_text())
    # the served model is trained again on training + validation rows: its own guarantee
    assert served["examples"] == 672 + 168 and 0.9 * 4.0 <= served["epsilon"] <= 4.0
    assert json.loads((out / "manifest.json").read_text())["privacy"] == served
    assert result["served"]["privacy"] == served
    assert np.isfinite(variant["auc"]["mean"]) and np.isfinite(variant["log_loss"]["mean"])


def test_a_ctr_run_without_privacy_records_none(tmp_path: Path) -> None:
    task = load_task(str(_config(tmp_path)))
    result = task.module.run(task.config, tmp_path / "run", "t")
    assert all("privacy" not in row for row in result["variants"])
    assert not (tmp_path / "run" / "model" / PRIVACY_FILE).exists()
    assert "privacy" not in json.loads((tmp_path / "run" / "manifest.json").read_text())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"models": ["neural", "logistic"], "privacy": {"enabled": True, "target_epsilon": 8}},
            r"trains the neural model only, but models also lists \['logistic'\]",
        ),
        ({"privacy": {"enabled": True}}, "exactly one of target_epsilon"),
        (
            {"privacy": {"enabled": True, "target_epsilon": -1}},
            r"privacy.target_epsilon: Input should be greater than 0 \(got -1\)",
        ),
        (
            {"privacy": {"enabled": True, "target_epsilon": 8, "delta": 1.5}},
            r"privacy.delta: Input should be less than 1",
        ),
        (
            {"privacy": {"enabled": True, "epsilon": 8}},
            r"privacy.epsilon: Extra inputs are not permitted",
        ),
        (
            {"privacy": {"enabled": True, "target_epsilon": 8, "trainable_layers": 2}},
            "privacy.trainable_layers applies to query towers",
        ),
        ({"privacy": 8}, "privacy must be a mapping"),
    ],
)
def test_bad_ctr_privacy_settings_are_named(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_task(str(_config(tmp_path, **overrides)))


def test_only_the_neural_learner_takes_a_trainer() -> None:
    from shopaug.models.ctr import CtrModel, CtrSettings

    trainer = PrivateRowTraining(PrivacyConfig(enabled=True, noise_multiplier=1.0))
    with pytest.raises(ValueError, match="trains the neural model only; got model 'logistic'"):
        CtrModel.fit(None, CtrSettings(model="logistic"), trainer=trainer)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"privacy\.enabled is false"):
        PrivateRowTraining(PrivacyConfig())


@pytest.mark.parametrize("clip", [1e-3, 1e6])
def test_a_row_update_is_the_mean_of_clipped_per_row_gradients(clip: float) -> None:
    # no noise, every row in the one step (q = 1), plain SGD: the update is
    # -lr * mean_i clip(grad_i), each row's gradient computed on its own without Opacus
    rng = np.random.default_rng(0)
    inputs = torch.as_tensor(rng.normal(size=(12, 5)), dtype=torch.float32)
    targets = torch.as_tensor(rng.integers(0, 2, 12), dtype=torch.float32)

    def network() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))

    def losses(model: torch.nn.Module, rows: np.ndarray) -> torch.Tensor:
        scores = model(inputs[rows])[:, 0]
        return torch.nn.functional.binary_cross_entropy_with_logits(
            scores, targets[rows], reduction="none"
        )

    reference = network()
    expected = [torch.zeros_like(p) for p in reference.parameters()]
    for row in range(12):
        gradients = torch.autograd.grad(
            losses(reference, np.array([row]))[0], list(reference.parameters())
        )
        norm = float(torch.sqrt(sum((g**2).sum() for g in gradients)))
        for total, gradient in zip(expected, gradients):
            total += gradient * min(1.0, clip / (norm + 1e-6)) / 12

    model = network()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = PrivateRowTraining(
        PrivacyConfig(enabled=True, noise_multiplier=0.0, max_grad_norm=clip)
    )
    trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        lambda rows: losses(model, rows),
        rows=12,
        batch_size=12,
        epochs=1,
        seed=0,
    )
    for old, new, gradient in zip(before, model.parameters(), expected):
        np.testing.assert_allclose((new - old).detach().numpy(), -gradient.numpy(), atol=1e-6)
    assert trainer.report is not None and trainer.report.steps == 1
    assert trainer.report.to_json()["epsilon"] is None  # no noise: no guarantee
    assert not hasattr(next(model.parameters()), "grad_sample")  # Opacus' hooks are gone
