"""``--engine ray``: the same samples as one process, on a local Ray instance (two CPUs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from shopaug.augment.mining import MiningConfig
from shopaug.augment.pipeline import AugmentConfig, augment
from shopaug.augment.samples import write_samples
from shopaug.data import load_dataset
from shopaug.encoders.cache import content_key
from shopaug.errors import MissingExtraError
from shopaug.retrieval.retrievers import build_encoder

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty embedding cache, so that the Ray path really encodes."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("SHOPAUG_CACHE_DIR", str(folder))
    return folder


def _parquet_bytes(frame, path: Path) -> bytes:
    write_samples(frame, path)
    return path.read_bytes()


def test_can_shard_mining_known_answers() -> None:
    from shopaug.scale.encoding import can_shard_mining

    assert can_shard_mining(MiningConfig(method="dense"))
    assert not can_shard_mining(MiningConfig(method="dense", sampling="random"))
    assert not can_shard_mining(MiningConfig(method="dense", label_fraction=0.5))
    assert not can_shard_mining(MiningConfig(method="hybrid"))  # floor score follows depth


def test_without_the_extra_the_error_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shopaug.scale import ray_engine

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'shopaug\[scale\]'"), ray_engine():
        pass


@pytest.mark.slow
def test_ray_samples_equal_one_process(local_ray, empty_cache: Path, tmp_path: Path) -> None:
    """Dense mining sharded over query ids and hybrid mining over vectors encoded on Ray give
    byte-identical samples.parquet and the same statistics as ``augment`` in one process."""
    from shopaug.scale import ray_engine
    from shopaug.scale.encoding import encode_into_cache

    dataset = load_dataset("demo")
    query_ids = [q.id for q in dataset.queries][::2]
    config = AugmentConfig(mining={"model": "hashing", "negatives_per_query": 3})
    encoder = build_encoder("hashing")
    texts = dataset.product_texts(MiningConfig().text_fields)
    assert encode_into_cache(encoder, "hashing", texts[:50], shards=2) == 50
    assert encode_into_cache(encoder, "hashing", texts[:50], shards=2) == 0  # cached now
    fresh = build_encoder("hashing")  # a new instance reads the vectors from disk
    np.testing.assert_allclose(
        fresh.cache.get_many([content_key(fresh.id, texts[7])])[content_key(fresh.id, texts[7])],
        fresh.encoder.encode([texts[7]])[0],
        rtol=1e-6,
    )
    with ray_engine() as engine:
        assert engine.shards == 2
        for method in ("dense", "hybrid", "random"):
            on_ray, ray_summary = engine.augment(
                dataset, method, query_ids, config=config, seed=3, show_progress=False
            )
            local, local_summary = augment(
                dataset, method, query_ids, config=config, seed=3, show_progress=False
            )
            assert len(local) > len(query_ids)
            assert _parquet_bytes(on_ray, tmp_path / "ray.parquet") == _parquet_bytes(
                local, tmp_path / "local.parquet"
            ), method
            for summary in (ray_summary, local_summary):
                summary.pop("seconds"), summary["details"].pop("seconds", None)
                summary.pop("engine", None)
            assert ray_summary == local_summary, method
    assert ray.is_initialized()  # an instance the engine did not start is left running


@pytest.mark.slow
def test_shopaug_run_engine_ray_matches_local(local_ray, tmp_path: Path) -> None:
    """``shopaug run --engine ray`` on the demo data: the same samples (byte for byte), the
    same trained rows and choice, and a served model directory with the same files and tensor
    shapes, as the local engine."""
    from safetensors import safe_open
    from typer.testing import CliRunner

    from shopaug.cli import app

    payload = {
        "name": "ray-tiny",
        "data": "demo",
        "folds": 2,
        "train_folds": 1,
        "validation_fraction": 0.25,
        "train": {"batch_size": 16, "epochs": 1, "lr": 1.0e-4},
        "augment": {"mining": {"max_positives_per_query": 2, "negatives_per_query": 3}},
        "ablation": [{"name": "dense hard", "methods": ["dense"]}],
        "fusion": {"enabled": False},
        "reranker": {"enabled": False},
        "show_progress": False,
    }
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(payload))
    runs = {}
    for engine in ("ray", "local"):
        out = tmp_path / engine
        result = CliRunner().invoke(
            app, ["run", str(config), "--out", str(out), "--engine", engine]
        )
        assert result.exit_code == 0, result.output
        runs[engine] = out

    def sample_files(out: Path) -> dict[str, bytes]:
        return {
            p.name: p.read_bytes() for p in sorted((out / "cache" / "samples").glob("*.parquet"))
        }

    assert sample_files(runs["ray"]) == sample_files(runs["local"]) != {}
    metrics = {e: json.loads((runs[e] / "metrics.json").read_text()) for e in runs}
    assert metrics["ray"]["selected"] == metrics["local"]["selected"]
    for ray_row, local_row in zip(metrics["ray"]["ablation"], metrics["local"]["ablation"]):
        assert ray_row["name"] == local_row["name"]
        assert ray_row["metrics"]["ndcg@10"]["mean"] == pytest.approx(
            local_row["metrics"]["ndcg@10"]["mean"], abs=1e-6
        )
    served = [(runs[e] / "samples.parquet") for e in runs]
    assert [p.exists() for p in served] in ([True, True], [False, False])
    if served[0].exists():
        assert served[0].read_bytes() == served[1].read_bytes()

    def shapes(model_dir: Path) -> dict[str, dict[str, tuple[int, ...]]]:
        found = {}
        for path in sorted(model_dir.rglob("*.safetensors")):
            with safe_open(str(path), framework="numpy") as handle:
                found[str(path.relative_to(model_dir))] = {
                    key: tuple(handle.get_slice(key).get_shape())
                    for key in handle.keys()  # noqa: SIM118 - safe_open is no dict
                }
        return found

    ray_model, local_model = runs["ray"] / "model", runs["local"] / "model"
    assert sorted(p.name for p in ray_model.iterdir()) == sorted(
        p.name for p in local_model.iterdir()
    )
    assert shapes(ray_model) == shapes(local_model) != {}
    manifest = json.loads((runs["ray"] / "manifest.json").read_text())
    assert manifest["config"]["engine"] == "ray"
