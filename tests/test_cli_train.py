"""shopaug train: fine-tune the bi-encoder on a samples file into a loadable model folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from shopaug.augment.samples import samples_frame, write_samples
from shopaug.cli import app
from shopaug.data import load_dataset
from shopaug.errors import ConfigError
from shopaug.experiment.config import RunConfig
from shopaug.experiment.finetune import train_config_for

runner = CliRunner()


def sample_rows(product_ids: list[tuple[str, str]]) -> list[dict[str, object]]:
    return [
        {
            "query_id": "q0",
            "query": "blue sofa",
            "product_id": pid,
            "label": 1 if kind == "positive" else 0,
            "kind": kind,
            "method": "random" if kind == "negative" else "judged",
            "source": "test",
            "seed": 0,
            "score": float("nan"),
            "rank": -1,
        }
        for pid, kind in product_ids
    ]


def demo_product_ids(n: int) -> list[str]:
    return [p.id for p in load_dataset("demo").products[:n]]


def test_train_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = runner.invoke(
        app, ["train", "--samples", str(tmp_path / "s.parquet"), "--out", str(out)]
    )
    assert result.exit_code == 2 and "shopaug train did not write" in result.output
    assert (out / "notes.txt").read_text() == "mine"


def test_train_reports_bad_samples_files(tmp_path: Path) -> None:
    missing = runner.invoke(
        app, ["train", "--samples", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "m")]
    )
    assert missing.exit_code == 2 and "samples file" in missing.output

    (first,) = demo_product_ids(1)
    only_negatives = write_samples(
        samples_frame(sample_rows([(first, "negative")])), tmp_path / "neg.parquet"
    )
    result = runner.invoke(
        app, ["train", "--samples", str(only_negatives), "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 2 and "no positive rows" in result.output

    foreign = write_samples(
        samples_frame(sample_rows([(first, "positive"), ("not-a-demo-id", "negative")])),
        tmp_path / "foreign.parquet",
    )
    result = runner.invoke(app, ["train", "--samples", str(foreign), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "1 product ids are not in data set 'demo'" in result.output
    assert "not-a-demo-id" in result.output
    assert not (tmp_path / "m" / "train.json").exists()


def test_steps_raise_the_epochs_so_the_budget_is_reachable() -> None:
    config = RunConfig(train={"batch_size": 4, "lr": 1e-5})
    train = train_config_for(config, examples=10, seed=3, max_steps=7)
    # 7 steps of 4 groups need 28 groups: 3 passes over 10
    assert (train.max_steps, train.epochs, train.seed, train.lr) == (7, 3, 3, 1e-5)
    untouched = train_config_for(config, examples=10, seed=0, max_steps=None)
    assert untouched.max_steps is None and untouched.epochs == 1
    with pytest.raises(ConfigError, match="--steps must be >= 1"):
        train_config_for(config, examples=10, seed=0, max_steps=0)
    with pytest.raises(ConfigError, match="config section 'train': batch_size: Input should be"):
        train_config_for(RunConfig(train={"batch_size": 0}), examples=10, seed=0, max_steps=1)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_augment_then_train_writes_a_loadable_model(tmp_path: Path) -> None:
    from shopaug.models import BiEncoder

    samples = tmp_path / "samples.parquet"
    made = runner.invoke(
        app,
        ["augment", "--data", "demo", "--method", "random", "--fold", "0", "--out", str(samples)],
    )
    assert made.exit_code == 0, made.output
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {"negatives_per_example": 2, "train": {"batch_size": 4, "lr": 1e-4, "log_every": 1}}
        )
    )
    out = tmp_path / "model"
    args = [
        "train",
        "--samples",
        str(samples),
        "--data",
        "demo",
        "--out",
        str(out),
        "--config",
        str(config),
        "--steps",
        "2",
        "--seed",
        "1",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output

    assert (out / "model.safetensors").is_file()
    record = json.loads((out / "train.json").read_text())
    assert record["status"] == "finished" and record["steps"] == 2
    assert record["samples"]["sha256"] == hashlib.sha256(samples.read_bytes()).hexdigest()
    frame = pd.read_parquet(samples)
    assert record["samples"]["methods"] == sorted(set(frame["method"]))
    assert record["samples"]["rows"] == len(frame) and "random" in set(frame["method"])
    assert record["data"]["name"] == "demo" and len(record["data"]["hash"]) == 16
    assert record["train"]["batch_size"] == 4 and record["train"]["seed"] == 1
    assert record["run_config"]["seed"] == 1  # one seed: --seed is the run config's seed
    assert record["train"]["max_steps"] == 2 and record["negatives_per_example"] == 2
    assert [point["step"] for point in record["curve"]] == [1, 2]
    assert all(np.isfinite(point["loss"]) for point in record["curve"])
    assert not (out / "training" / "checkpoints").exists()  # weights are kept once

    trained = BiEncoder(out)
    base = BiEncoder()
    texts = ["blue velvet sofa", "brass floor lamp"]
    vectors = trained.encode(texts)
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    # two steps at lr 1e-4 move the weights: the encodings differ from MiniLM's
    assert not np.allclose(vectors, base.encode(texts), atol=1e-6)

    # the folder is shopaug's now: training again into it is allowed
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert np.allclose(BiEncoder(out).encode(texts), vectors, atol=1e-5)  # same seed, same model
