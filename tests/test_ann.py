"""Approximate indexes (FAISS HNSW, IVF-PQ) against exact search, and the size threshold that
makes the service use one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from shopaug.errors import ConfigError
from shopaug.index.vector import (
    AnnConfig,
    AnnIndex,
    VectorIndex,
    build_index,
    choose_index_kind,
)

DIM = 32


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    """Small indexes build fastest on one thread (OpenMP on busy cores only waits)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2000 unit vectors in 50 tight clusters of 40, and one query near each cluster centre:
    a query's 10 exact neighbours all sit in its cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, DIM)).astype(np.float32)
    points = np.repeat(centres, 40, axis=0) + 0.3 * rng.normal(size=(2000, DIM))
    queries = centres + 0.3 * rng.normal(size=centres.shape)
    unit = [
        (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32) for v in (points, queries)
    ]
    return unit[0], unit[1]


def recall_at_10(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    points, queries = clustered()
    exact, _ = VectorIndex(points).search(queries, 10)
    # the known structure: every exact neighbour is in the query's own cluster
    assert (exact // 40 == np.arange(50)[:, None]).all()
    return points, queries, exact


def test_hnsw_finds_the_exact_neighbours(data) -> None:
    points, queries, exact = data
    index = AnnIndex(points, "hnsw")
    rows, scores = index.search(queries, 10)
    assert recall_at_10(rows, exact) >= 0.98
    np.testing.assert_allclose(scores[:, 0], (points[rows[:, 0]] * queries).sum(axis=1), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_ivf_pq_recall_grows_with_code_size_and_refinement(data) -> None:
    points, queries, exact = data
    recalls = {
        pq_m: recall_at_10(
            AnnIndex(points, "ivf-pq", AnnConfig(pq_m=pq_m, nprobe=8)).search(queries, 10)[0], exact
        )
        for pq_m in (8, 16)
    }
    refined = AnnIndex(points, "ivf-pq", AnnConfig(pq_m=8, nprobe=8, refine=4))
    assert recalls[8] >= 0.5  # compressed to 8 bytes a vector: far better than chance (0.005)
    assert recalls[16] > recalls[8]
    assert recall_at_10(refined.search(queries, 10)[0], exact) >= 0.95
    compact = AnnIndex(points, "ivf-pq", AnnConfig(pq_m=8))
    assert compact.memory_bytes < points.nbytes / 2 < AnnIndex(points, "hnsw").memory_bytes


def test_ann_pads_short_results_and_checks_its_config() -> None:
    points, _ = clustered()
    rows, scores = AnnIndex(points[:5], "hnsw").search(points[:2], 8)
    assert rows.shape == (2, 8) and (rows[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    assert sorted(rows[0, :5]) == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match="divide"):
        AnnIndex(points, "ivf-pq", AnnConfig(pq_m=7))
    with pytest.raises(ConfigError, match="256 vectors"):
        AnnIndex(points[:100], "ivf-pq", AnnConfig(pq_m=8))
    with pytest.raises(ConfigError, match="ANN kind"):
        AnnIndex(points, "lsh")  # type: ignore[arg-type]


def test_the_threshold_switches_exact_to_ann() -> None:
    assert choose_index_kind(999, threshold=1000) == "exact"
    assert choose_index_kind(1000, threshold=1000) == "hnsw"
    assert choose_index_kind(1000, threshold=1000, ann="ivf-pq") == "ivf-pq"
    assert choose_index_kind(5, threshold=0) == "hnsw"
    with pytest.raises(ConfigError, match="ann_threshold"):
        choose_index_kind(5, threshold=-1)
    assert isinstance(build_index(clustered()[0], "exact"), VectorIndex)
    assert isinstance(build_index(clustered()[0], "hnsw"), AnnIndex)


def test_the_service_uses_ann_above_its_threshold(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from shopaug.data import load_dataset
    from shopaug.models.model_dir import write_hashing_model
    from shopaug.serve.catalog_backend import CatalogLoader
    from shopaug.serve.runtime import ServingOptions

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: demo\ntext_fields: [title, category]\n", "utf-8")
    write_hashing_model(run / "model", 64)
    demo = load_dataset("demo")

    def backend(threshold: int):
        options = ServingOptions(ann_threshold=threshold)
        loader = CatalogLoader(run, dataset=demo, cache_dir=tmp_path / "cache", options=options)
        return loader(run / "model")

    exact, ann = backend(len(demo.products) + 1), backend(len(demo.products))
    assert (exact.index_kind, ann.index_kind) == ("exact", "hnsw")
    for query in ("floor lamp", "blue sofa", "oak table"):  # a small catalog: the same top 5
        assert [h.product_id for h in ann.search(query, 5, None)] == [
            h.product_id for h in exact.search(query, 5, None)
        ]
    category = demo.products[0].category[0]
    assert ann.search("lamp", 3, {"category": category}) == exact.search(
        "lamp", 3, {"category": category}
    )


def test_serve_command_passes_the_threshold_and_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("fastapi")
    from typer.testing import CliRunner

    import shopaug.serve
    import shopaug.serve.catalog_backend
    from shopaug.cli import app

    seen: dict[str, object] = {}

    def loader(run_dir: Path, *, options: object) -> str:
        seen["options"] = options
        return "loader"

    monkeypatch.setattr(shopaug.serve.catalog_backend, "make_catalog_loader", loader)
    monkeypatch.setattr(shopaug.serve, "run", lambda *args, **settings: seen.update(settings))
    argv = ["serve", str(tmp_path), "--ann-threshold", "1000", "--ann-kind", "ivf-pq"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    options = seen["options"]
    assert (options.ann_threshold, options.ann_kind) == (1000, "ivf-pq")  # type: ignore[attr-defined]
    assert (seen["ann_threshold"], seen["ann_kind"]) == (1000, "ivf-pq")
    refused = CliRunner().invoke(app, ["serve", str(tmp_path), "--ann-kind", "lsh"])
    assert refused.exit_code != 0 and "lsh" in refused.output
