"""The one reader of a run directory (retrieval.catalog.CatalogSource): the data choice with a
user's ``--products`` file, and the test folds, read the same way by serve, online and simulate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shopaug.data import kfold_queries, load_dataset, write_folds
from shopaug.errors import ConfigError
from shopaug.models.model_dir import write_hashing_model
from shopaug.retrieval.catalog import CatalogSource


def _run_dir(root: Path, config: dict) -> Path:
    run = root / "run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    write_hashing_model(run / "model", 64)
    return run


def test_serve_and_online_see_the_products_file_of_the_run(wands_dir: Path, tmp_path: Path):
    moved = tmp_path / "elsewhere" / "my-products.csv"
    moved.parent.mkdir()
    (wands_dir / "wands" / "product.csv").rename(moved)
    expected = load_dataset("wands", data_dir=wands_dir, products_path=moved)
    run = _run_dir(
        tmp_path,
        {"data": "wands", "data_dir": str(wands_dir), "products": str(moved), "seed": 0},
    )
    source = CatalogSource.from_run_dir(run)
    assert source.products == str(moved)
    assert [p.id for p in source.load().products] == [p.id for p in expected.products]

    from shopaug.serve.catalog_backend import CatalogLoader

    served = CatalogLoader(run).catalog()
    assert [p.id for p in served.products] == [p.id for p in expected.products]

    moved.unlink()
    with pytest.raises(ConfigError, match=r"my-products\.csv"):
        CatalogSource.from_run_dir(run).load()


def test_a_run_with_products_writes_the_file_it_read(wands_dir: Path, tmp_path: Path, monkeypatch):
    """``shopaug run --products`` records the file as an absolute path, so the run directory
    is read the same from any working directory."""
    from shopaug.experiment import runner
    from shopaug.experiment.config import parse_run_config

    moved = tmp_path / "p.csv"
    (wands_dir / "wands" / "product.csv").rename(moved)
    monkeypatch.chdir(tmp_path)
    config = parse_run_config(
        {
            "data": "wands",
            "data_dir": str(wands_dir),
            "products": "p.csv",
            "folds": 2,
            "ablation": [],
        },
        source="test",
    )
    stop = RuntimeError("stop after the run directory is written")

    def no_baselines(*args, **kwargs):
        raise stop

    monkeypatch.setattr(runner, "_baselines", no_baselines)
    with pytest.raises(RuntimeError):
        runner.run_experiment(config, tmp_path / "run")
    assert CatalogSource.from_run_dir(tmp_path / "run").products == str(moved)


def test_test_folds_come_from_folds_json_or_the_configs_folds(tmp_path: Path) -> None:
    demo = load_dataset("demo")
    run = _run_dir(tmp_path, {"data": "demo", "seed": 3, "folds": 4})
    ids = [q.id for q in demo.queries]
    recomputed = CatalogSource.from_run_dir(run).test_fold(demo)
    assert recomputed == [str(q) for q in kfold_queries(ids, n_folds=4, seed=3)[0].test]
    written = kfold_queries(ids, n_folds=3, seed=9)
    write_folds(written, run / "folds.json", seed=9)
    assert CatalogSource.from_run_dir(run).test_fold(demo, 1) == list(written[1].test)
    (run / "folds.json").write_text('{"folds": []}', "utf-8")
    with pytest.raises(ConfigError, match=r"folds\.json"):
        CatalogSource.from_run_dir(run).test_fold(demo)
