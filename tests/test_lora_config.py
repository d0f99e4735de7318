"""LoRA switched on from a run config's ``train`` / ``reranker`` sections and from
``shopaug train --lora-r``: the settings reach the model, bad values are refused by name, and a
loop given LoRA settings refuses a model built without adapters."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from shopaug.cli import app
from shopaug.encoders.base import HashingEncoder
from shopaug.errors import ConfigError
from shopaug.experiment.config import parse_run_config
from shopaug.experiment.rows import train_config_for
from shopaug.models.hashing_model import HashingProjection
from shopaug.train.config import TrainConfig, TrainingExample
from shopaug.train.grouped import QueryGroup, fit_query_groups

runner = CliRunner()


def test_a_train_section_with_lora_reaches_the_model_settings() -> None:
    config = parse_run_config(
        {"seed": 7, "train": {"lora": {"r": 4, "alpha": 8, "target_modules": ["query"]}}},
        source="t.yaml",
    )
    train = train_config_for(config)
    assert train.lora is not None and train.lora.r == 4
    settings = train.lora.settings(train.seed)
    assert (settings.r, settings.alpha, settings.dropout, settings.seed) == (4, 8, 0.1, 7)
    assert tuple(settings.target_modules) == ("query",)
    assert train_config_for(parse_run_config({}, source="t.yaml")).lora is None


@pytest.mark.parametrize(
    ("lora", "message"),
    [
        ({"r": 0}, r"'t.yaml: train': lora.r: Input should be greater than or equal to 1"),
        ({"r": 8, "dropout": 1.0}, r"lora.dropout: Input should be less than 1"),
        ({"r": 8, "rank": 4}, r"lora.rank: Extra inputs are not permitted"),
        ({"target_modules": []}, r"lora.target_modules: .*at least 1 item"),
        ({"target_modules": [" "]}, r"lora.target_modules holds an empty name"),
        ("eight", r"lora: Input should be a valid dictionary"),
    ],
)
def test_bad_lora_values_are_named(lora: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_run_config({"train": {"lora": lora}}, source="t.yaml")


def test_lora_and_privacy_together_are_refused() -> None:
    train = {"lora": {"r": 4}, "privacy": {"enabled": True, "target_epsilon": 8.0}}
    with pytest.raises(ConfigError, match="lora and privacy together are not supported"):
        parse_run_config({"tower": "query", "train": train}, source="t.yaml")


def test_reranker_lora_is_checked_when_the_config_is_read() -> None:
    config = parse_run_config({"reranker": {"lora": {"r": 16}}}, source="t.yaml")
    assert config.reranker.lora == {"r": 16}
    assert "lora" in config.reranker.cache_key()
    # without LoRA the reranker's cache key is what it was before the option existed
    assert "lora" not in parse_run_config({}, source="t.yaml").reranker.cache_key()
    with pytest.raises(ConfigError, match=r"'t.yaml: reranker.lora': r: Input should be"):
        parse_run_config({"reranker": {"lora": {"r": -1}}}, source="t.yaml")
    with pytest.raises(ConfigError, match=r"reranker\.lora' must be a mapping"):
        parse_run_config({"reranker": {"lora": 8}}, source="t.yaml")


class HashedTower(nn.Module):
    """A trainable query map over hashed features; items hashed and frozen; no adapters."""

    def __init__(self) -> None:
        super().__init__()
        self.query = HashingProjection(16)
        self.items = HashingEncoder(16)

    def embed_queries(self, texts: Sequence[str]) -> torch.Tensor:
        return self.query.embed(texts)

    def embed_items(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.from_numpy(self.items.encode(list(texts)))

    def save(self, directory: str | Path) -> None:
        self.query.save(directory)


def test_loops_refuse_lora_settings_for_a_model_without_adapters(tmp_path: Path) -> None:
    from shopaug.train import fit

    config = TrainConfig(batch_size=2, lora={"r": 2})
    groups = [QueryGroup("oak desk", ("oak desk",), ("pine desk",))]
    with pytest.raises(ConfigError, match=r"train\.lora is set .* has no LoRA adapters"):
        fit_query_groups(HashedTower(), groups, config, run_dir=tmp_path / "a")
    with pytest.raises(ConfigError, match="HashingProjection has no LoRA adapters"):
        fit(
            HashingProjection(16),
            [TrainingExample("oak desk", "oak desk")],
            config,
            run_dir=tmp_path / "b",
        )


def test_a_query_tower_with_lora_trains_only_adapters_and_saves_merged(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    pytest.importorskip("sentence_transformers")
    from shopaug.models.lora import LoraSettings, has_lora
    from shopaug.models.query_tower import QueryTowerModel

    items = HashingEncoder(384)  # any frozen item side of the right size
    tower = QueryTowerModel.from_base("minilm", item_encoder=items, lora=LoraSettings(r=2))
    trainable = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    # r=2 on query and value of 6 layers: 6 * 2 * (384 * 2 + 2 * 384) parameters
    assert sum(p.numel() for p in tower.parameters() if p.requires_grad) == 6 * 2 * 4 * 384
    frozen = {n: p.clone() for n, p in tower.named_parameters() if not p.requires_grad}
    groups = [
        QueryGroup(f"{color} sofa", (f"sofa in {color}",), (f"lamp in {color}",))
        for color in ("red", "blue", "green", "grey")
    ]
    config = TrainConfig(batch_size=2, epochs=1, lr=1e-2, warmup_ratio=0.0, lora={"r": 2})
    result = fit_query_groups(tower, groups, config, run_dir=tmp_path, show_progress=False)
    assert result.steps == 2
    for name, parameter in tower.named_parameters():
        if name in frozen:
            assert torch.equal(parameter, frozen[name]), name
    reloaded = QueryTowerModel.load(result.model_dir, item_encoder=items)
    assert not has_lora(reloaded)  # merged weights: a plain sentence-transformers folder
    texts = ["red sofa", "blue lamp"]
    assert np.allclose(reloaded.encode(texts), tower.encode(texts), atol=1e-5)
    base = QueryTowerModel.from_base("minilm", item_encoder=items)
    assert not np.allclose(base.encode(texts), tower.encode(texts), atol=1e-4)  # it learnt


def test_train_cli_refuses_a_bad_lora_rank(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "train",
            "--samples",
            str(tmp_path / "s.parquet"),
            "--out",
            str(tmp_path / "m"),
            "--lora-r",
            "0",
        ],
    )
    # the config is checked before the samples are read
    assert result.exit_code == 2
    assert "lora.r: Input should be greater than or equal to 1" in result.output


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_cli_with_lora_records_it_and_writes_plain_weights(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from shopaug.models import BiEncoder

    samples = tmp_path / "samples.parquet"
    made = runner.invoke(
        app,
        ["augment", "--data", "demo", "--method", "random", "--fold", "0", "--out", str(samples)],
    )
    assert made.exit_code == 0, made.output
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"train": {"batch_size": 4, "lr": 5e-3}}))
    out = tmp_path / "model"
    result = runner.invoke(
        app,
        [
            *("train", "--samples", str(samples), "--data", "demo", "--out", str(out)),
            *("--config", str(config), "--steps", "2", "--lora-r", "4"),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "train.json").read_text())
    assert record["train"]["lora"]["r"] == 4 and record["train"]["lr"] == 5e-3
    trained = BiEncoder(out)
    assert not any("lora" in name for name, _ in trained.named_parameters())
    texts = ["blue velvet sofa", "brass floor lamp"]
    assert not np.allclose(trained.encode(texts), BiEncoder().encode(texts), atol=1e-5)
