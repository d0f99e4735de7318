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


def _demo_groups(dataset, *, per_query: int = 2) -> list:
    """(query, positive, two negatives) training groups from the demo judgments; the
    negatives are fixed products at offsets from the positive (known, seed-free)."""
    from shopaug.train import TrainingExample

    positives = dataset.positives(query_ids=[q.id for q in dataset.queries])
    texts = dataset.product_texts(("title",))
    index = dataset.product_index
    groups = []
    for query in dataset.queries:
        for k, product in enumerate(sorted(positives.get(query.id, ()))[:per_query]):
            row = index[product]
            negatives = [texts[(row + 7 * (k + 1)) % len(texts)], texts[(row + 13) % len(texts)]]
            groups.append(TrainingExample(query.text, texts[row], negatives))
    return groups


def _tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def _listing(folder: Path) -> list[str]:
    """The files under ``folder``; TensorBoard event files by their folder (their names hold
    a time stamp, a host and a process id)."""
    return sorted(
        str(p.parent.relative_to(folder) / "events.out.tfevents")
        if p.name.startswith("events.out.tfevents")
        else str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file()
    )


@pytest.mark.slow
def test_fit_on_ray_two_workers_gives_the_weights_of_one_process(local_ray, tmp_path: Path) -> None:
    """Two Ray Train workers (one CPU each) deal out every batch and sum the share-weighted
    gradients: without in-batch negatives (each group's loss reads its own candidates only)
    and without dropout (the hashing model) that is the gradient of the whole batch, so the
    weights, the curve and every file written equal a local ``fit`` up to float rounding. The
    last batch (20 groups in batches of 8: 8, 8, 4) and odd shares are part of the run."""
    from shopaug.models.hashing_model import HashingProjection
    from shopaug.models.model_dir import load_trainable
    from shopaug.scale.training import fit_on_ray
    from shopaug.train import TrainConfig, fit

    dataset = load_dataset("demo")
    groups = _demo_groups(dataset)[:20]
    groups[3] = type(groups[3])(groups[3].query, groups[3].positive, groups[3].negatives, 3.0)
    config = TrainConfig(
        batch_size=8,
        epochs=2,
        lr=0.05,
        in_batch_negatives=False,
        checkpoint_every=2,
        num_threads=1,
        seed=5,
    )
    local = fit(
        HashingProjection(64), groups, config, run_dir=tmp_path / "local", show_progress=False
    )
    on_ray = fit_on_ray(HashingProjection(64), groups, config, run_dir=tmp_path / "ray", workers=2)
    assert on_ray.steps == local.steps == 6
    assert _listing(tmp_path / "ray") != []
    assert _listing(tmp_path / "ray") == _listing(tmp_path / "local")
    trained = _tensors(tmp_path / "ray" / "model" / "projection.safetensors")["weight"]
    expected = _tensors(tmp_path / "local" / "model" / "projection.safetensors")["weight"]
    assert not np.allclose(expected, np.eye(64))  # it trained
    np.testing.assert_allclose(trained, expected, atol=1e-5)  # Adam amplifies rounding
    assert [p["loss"] for p in on_ray.curve] == pytest.approx(
        [p["loss"] for p in local.curve], abs=1e-6
    )
    checkpoint = on_ray.checkpoint_path
    assert checkpoint is not None and checkpoint.name == "step-00000006"
    np.testing.assert_allclose(
        _tensors(checkpoint / "optimizer.safetensors")["0.exp_avg"],
        _tensors(local.checkpoint_path / "optimizer.safetensors")["0.exp_avg"],
        atol=1e-6,
    )
    model = load_trainable(tmp_path / "ray" / "model")
    queries = [q.text for q in dataset.queries[:10]]
    catalog = dataset.product_texts(("title",))
    scores = model.encode(queries) @ model.encode(catalog).T  # (10, catalog)
    reference = load_trainable(tmp_path / "local" / "model")
    expected_scores = reference.encode(queries) @ reference.encode(catalog).T
    # the same scores up to float rounding (the hashing model has many tied scores, so an
    # exact top-10 order would compare how rounding breaks ties, not the training)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-4)


@pytest.mark.slow
@pytest.mark.timeout(900)  # three MiniLM trainings, two on Ray; a stalled Ray fails here
def test_shopaug_train_engine_ray_writes_the_local_model_folder(local_ray, tmp_path: Path) -> None:
    """``shopaug train --engine ray``: the MiniLM bi-encoder fine-tuned by one Ray Train
    worker has the weights of the local command (same seed) up to float rounding; with two
    workers (dropout masks drawn per worker) it is another model of the same format, which
    loads and ranks the demo queries almost as the local one does."""
    from typer.testing import CliRunner

    from shopaug.cli import app
    from shopaug.models import BiEncoder

    dataset = load_dataset("demo")
    frame, _ = augment(
        dataset, "random", [q.id for q in dataset.queries], seed=0, show_progress=False
    )
    samples = tmp_path / "samples.parquet"
    write_samples(frame, samples)
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {"train": {"batch_size": 8, "lr": 5e-5, "num_threads": 1}, "show_progress": False}
        )
    )
    runs = {}
    for name, extra in (
        ("local", []),
        ("ray-1", ["--engine", "ray", "--workers", "1"]),
        ("ray-2", ["--engine", "ray", "--workers", "2"]),
    ):
        out = tmp_path / name
        command = ["train", "--samples", str(samples), "--out", str(out), "--config", str(config)]
        result = CliRunner().invoke(app, [*command, "--steps", "2", *extra])
        assert result.exit_code == 0, result.output
        runs[name] = out
    assert _listing(runs["ray-1"]) == _listing(runs["local"])
    assert _listing(runs["ray-2"]) == _listing(runs["local"])
    record = json.loads((runs["ray-2"] / "train.json").read_text())
    assert record["engine"] == "ray" and record["steps"] == 2 and record["status"] == "finished"
    local = _tensors(runs["local"] / "model.safetensors")
    one = _tensors(runs["ray-1"] / "model.safetensors")
    two = _tensors(runs["ray-2"] / "model.safetensors")
    base = BiEncoder(None)
    assert set(one) == set(local) == set(two)
    for key in local:
        np.testing.assert_allclose(one[key], local[key], atol=1e-5, err_msg=key)
    queries = [q.text for q in dataset.queries]
    catalog = dataset.product_texts()

    def top10(model) -> np.ndarray:
        return np.argsort(-(model.encode(queries) @ model.encode(catalog).T), axis=1)[:, :10]

    local_top = top10(BiEncoder(runs["local"]))
    np.testing.assert_array_equal(top10(BiEncoder(runs["ray-1"])), local_top)
    # Two workers draw other dropout masks, so the weights are not the local ones (the exact
    # two-worker equality is test_fit_on_ray_two_workers_gives_the_weights_of_one_process, on
    # a model without dropout); here: it trained (moved off the base weights), and it loads
    # and ranks the demo catalog.
    base.save(tmp_path / "base")
    base_weights = _tensors(tmp_path / "base" / "model.safetensors")
    assert set(base_weights) == set(two)
    moved = [key for key in two if not np.allclose(two[key], base_weights[key], atol=1e-7)]
    assert moved, "the two-worker model kept the base weights"
    two_top = top10(BiEncoder(runs["ray-2"]))
    assert two_top.shape == local_top.shape and (two_top >= 0).all()


def test_shopaug_train_engine_ray_without_the_extra_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from shopaug.cli import app

    dataset = load_dataset("demo")
    frame, _ = augment(
        dataset, "positives", [q.id for q in dataset.queries][:5], show_progress=False
    )
    write_samples(frame, tmp_path / "samples.parquet")
    for name in ("ray", "ray.data", "ray.train", "ray.train.torch"):
        monkeypatch.setitem(sys.modules, name, None)
    result = CliRunner().invoke(
        app,
        [
            *("train", "--samples", str(tmp_path / "samples.parquet")),
            *("--out", str(tmp_path / "m"), "--engine", "ray", "--steps", "1"),
        ],
    )
    assert result.exit_code == 2
    assert "pip install 'shopaug[scale]'" in result.output
