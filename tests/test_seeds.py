"""One place gives every stage its seed (shopaug.config.seeded), and the manifest records them."""

from __future__ import annotations

import pytest

from shopaug.config import SEEDED_STAGES, seeded, stage_seeds
from shopaug.errors import ConfigError
from shopaug.experiment.config import parse_run_config


def test_a_section_gets_the_run_seed_and_may_not_set_another() -> None:
    assert seeded({"margin": 0.1}, 7, name="mining") == {"margin": 0.1, "seed": 7}
    assert seeded({"seed": 7}, 7, name="mining") == {"seed": 7}
    assert seeded(None, 3, name="generator") == {"seed": 3}
    with pytest.raises(ConfigError, match=r"'mining': seed 1 differs from the run's seed 7"):
        seeded({"seed": 1}, 7, name="mining")


def test_run_and_train_configs_refuse_a_train_seed_that_is_not_the_runs() -> None:
    with pytest.raises(ConfigError, match="seed 5 differs"):
        parse_run_config({"seed": 0, "train": {"seed": 5}}, source="test")
    config = parse_run_config({"seed": 4, "train": {"epochs": 1}}, source="test")
    from shopaug.experiment.finetune import train_config_for

    assert train_config_for(config, examples=10, seed=4, max_steps=None).seed == 4


def test_the_augment_sections_take_the_run_seed(tmp_path) -> None:
    from shopaug.augment.pipeline import AugmentConfig, augment
    from shopaug.data import load_dataset

    demo = load_dataset("demo")
    ids = [q.id for q in demo.queries][:3]
    with pytest.raises(ConfigError, match="'mining'"):
        augment(demo, "random", ids, config=AugmentConfig(mining={"seed": 9}), seed=0)
    frame, _ = augment(
        demo, "random", ids, config=AugmentConfig(mining={"seed": 2}), seed=2, show_progress=False
    )
    assert set(frame["seed"]) == {2}


def test_the_manifest_names_every_stage_seed() -> None:
    seeds = stage_seeds(11)
    assert seeds["run"] == 11 and set(SEEDED_STAGES) <= set(seeds)
