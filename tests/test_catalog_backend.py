"""The real search backend on the demo catalog with the hashing model (no download, fast)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from shopaug.data import load_dataset
from shopaug.encoders.base import HashingEncoder
from shopaug.errors import ConfigError
from shopaug.models.hashing_model import HashingProjection
from shopaug.models.model_dir import (
    MODEL_DESCRIPTOR,
    load_encoder,
    model_version,
    write_hashing_model,
)
from shopaug.serve.backend import SearchBackend, UnknownProductError, UnsupportedFilterError
from shopaug.serve.catalog_backend import (
    CatalogBackend,
    CatalogLoader,
    find_run_dir,
    load_catalog_backend,
)

FIELDS = ("title", "category")
DIM = 256


@pytest.fixture(scope="module")
def demo():
    return load_dataset("demo")


@pytest.fixture(scope="module")
def vectors(demo) -> np.ndarray:
    """Brute-force reference: the hashing vectors of every product, catalog order."""
    return HashingEncoder(DIM).encode(demo.product_texts(FIELDS))


def make_run_dir(root: Path) -> Path:
    run = root / "run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        "data: demo\ntext_fields: [title, category]\nseed: 0\n", encoding="utf-8"
    )
    write_hashing_model(run / "model", DIM)
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("catalog"))


@pytest.fixture(scope="module")
def backend(run_dir: Path) -> CatalogBackend:
    return load_catalog_backend(run_dir / "model")


def reference_top(vectors: np.ndarray, query: np.ndarray, k: int, rows=None) -> list[int]:
    rows = np.arange(len(vectors)) if rows is None else np.asarray(rows)
    scores = vectors[rows] @ query
    order = np.lexsort((rows, -scores))[:k]
    return [int(rows[i]) for i in order]


def test_backend_satisfies_the_protocol(backend: CatalogBackend, demo) -> None:
    assert isinstance(backend, SearchBackend)
    assert backend.size == len(demo.products) == 480
    assert backend.has_product("p0000")
    assert not backend.has_product("nope")


def test_search_ranks_like_brute_force_cosine(backend, demo, vectors) -> None:
    query = "brass floor lamp"
    query_vector = HashingEncoder(DIM).encode([query])[0]
    expected = reference_top(vectors, query_vector, 10)
    hits = backend.search(query, 10, None)
    # Same scores in the same order; ids equal up to exact ties of the float scores.
    np.testing.assert_allclose(
        [h.score for h in hits], [vectors[r] @ query_vector for r in expected], atol=1e-5
    )
    for hit in hits:
        row = demo.product_index[hit.product_id]
        assert hit.score == pytest.approx(float(vectors[row] @ query_vector), abs=1e-5)
        assert hit.title == demo.products[row].title
    assert [h.product_id for h in hits[:5]] == [demo.products[r].id for r in expected[:5]]
    assert all("lamp" in h.title for h in hits[:5])


def test_search_k_larger_than_catalog_returns_every_product(backend) -> None:
    assert len(backend.search("sofa", 1000, None)) == 480


def test_category_filter_matches_any_level_case_insensitively(backend, demo, vectors) -> None:
    query = HashingEncoder(DIM).encode(["modern lamp"])[0]
    for value in ("Lighting", "lighting", "LAMPS", "living room"):
        hits = backend.search("modern lamp", 8, {"category": value})
        rows = [
            r
            for r, p in enumerate(demo.products)
            if value.lower() in {c.lower() for c in p.category}
        ]
        assert rows, value
        assert [h.product_id for h in hits] == [
            demo.products[r].id for r in reference_top(vectors, query, 8, rows)
        ]
    assert backend.search("lamp", 5, {"category": "no such category"}) == []


def test_unknown_filter_field_is_rejected_by_name(backend) -> None:
    with pytest.raises(UnsupportedFilterError, match="'color'"):
        backend.search("sofa", 5, {"color": "red"})


def test_recommend_is_the_mean_history_embedding_without_the_history(
    backend, demo, vectors
) -> None:
    history = ["p0000", "p0001"]
    rows = [demo.product_index[p] for p in history]
    profile = vectors[rows].mean(axis=0)
    profile /= np.linalg.norm(profile)
    expected = [r for r in reference_top(vectors, profile, 12) if r not in rows][:10]
    hits = backend.recommend(history, 10)
    assert [h.product_id for h in hits] == [demo.products[r].id for r in expected]
    assert not set(history) & {h.product_id for h in hits}


def test_items_without_interactions_are_recommended(backend, demo) -> None:
    interacted = {i.product_id for i in demo.interactions}
    new_items = [p.id for p in demo.products if p.id not in interacted]
    assert new_items  # the demo has cold-start items
    # A new item can be the history, and new items come back as recommendations.
    assert len(backend.recommend([new_items[0]], 5)) == 5
    recommended = {h.product_id for h in backend.recommend(["p0000"], 50)}
    assert recommended & set(new_items)


def test_recommend_names_unknown_ids(backend) -> None:
    with pytest.raises(UnknownProductError) as caught:
        backend.recommend(["p0000", "ghost-1", "ghost-2"], 5)
    assert caught.value.product_ids == ("ghost-1", "ghost-2")


def test_query_vectors_are_cached_and_bounded(run_dir: Path) -> None:
    loader = CatalogLoader(run_dir, query_cache_size=2)
    backend = loader(run_dir / "model")
    calls: list[list[str]] = []
    original = backend._encoder.encode

    def counting(texts, *, show_progress=False):
        calls.append(list(texts))
        return original(texts, show_progress=show_progress)

    backend._encoder.encode = counting  # type: ignore[method-assign]
    first = backend.search("blue sofa", 5, None)
    assert backend.search("blue sofa", 5, None) == first
    assert calls == [["blue sofa"]]  # the second search used the cached vector
    assert (backend.query_cache.hits, backend.query_cache.misses) == (1, 1)
    backend.search("oak desk", 5, None)
    backend.search("rug", 5, None)
    assert len(backend.query_cache) == 2  # "blue sofa" was evicted (least recently used)
    backend.search("blue sofa", 5, None)
    assert calls[-1] == ["blue sofa"]


def test_concurrent_searches_give_the_sequential_answers(backend) -> None:
    queries = ["blue sofa", "oak desk", "wool rug", "floor lamp", "glass table"]
    expected = {q: backend.search(q, 10, None) for q in queries}
    failures: list[str] = []

    def worker(offset: int) -> None:
        for step in range(40):
            query = queries[(offset + step) % len(queries)]
            if backend.search(query, 10, None) != expected[query]:
                failures.append(query)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_version_is_the_weights_hash(run_dir: Path, tmp_path: Path, backend) -> None:
    assert backend.version == model_version(run_dir / "model")
    copy = tmp_path / "copy-of-model"
    shutil.copytree(run_dir / "model", copy)
    assert model_version(copy) == backend.version  # a copy keeps its version
    trained = HashingProjection(DIM, np.eye(DIM, dtype=np.float32) * 2.0)
    trained.save(tmp_path / "trained")
    assert model_version(tmp_path / "trained") != backend.version


def test_hashing_projection_starts_as_the_hashing_encoder(tmp_path: Path) -> None:
    texts = ["blue velvet sofa", "oak desk"]
    identity = HashingProjection(64)
    np.testing.assert_allclose(identity.encode(texts), HashingEncoder(64).encode(texts), atol=1e-6)
    weight = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    HashingProjection(64, weight).save(tmp_path / "m")
    loaded = load_encoder(tmp_path / "m")
    np.testing.assert_allclose(
        loaded.encode(texts), HashingProjection(64, weight).encode(texts), atol=1e-6
    )


def test_promoted_model_dirs_find_the_run_config(run_dir: Path, backend) -> None:
    promoted = run_dir / "models" / "v0001-challenger"
    shutil.copytree(run_dir / "model", promoted)
    assert find_run_dir(promoted) == run_dir.resolve()
    assert load_catalog_backend(promoted).search("sofa", 3, None) == backend.search("sofa", 3, None)


def test_missing_config_and_bad_descriptor_are_named(tmp_path: Path) -> None:
    model = write_hashing_model(tmp_path / "lonely" / "model")
    with pytest.raises(ConfigError, match=r"config\.yaml"):
        load_catalog_backend(model)
    (model / MODEL_DESCRIPTOR).write_text('{"kind": "word2vec"}', encoding="utf-8")
    with pytest.raises(ConfigError, match="'kind'"):
        model_version(model)
    with pytest.raises(FileNotFoundError, match="safetensors"):
        model_version(tmp_path)


@pytest.mark.slow
def test_minilm_run_dir_serves_sensible_results(tmp_path: Path) -> None:
    from shopaug.encoders.dense import minilm_path

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: demo\ntext_fields: [title, category]\n", "utf-8")
    shutil.copytree(minilm_path(), run / "model")
    backend = load_catalog_backend(run / "model")
    assert backend.version.startswith("st@")
    hits = backend.search("floor lamp", 5, None)
    assert all("lamp" in hit.title.lower() for hit in hits)
    recommended = backend.recommend([hits[0].product_id], 3)
    assert hits[0].product_id not in {h.product_id for h in recommended}


class SlowEncoder:
    """Records every batch it is asked for; takes a while, so that requests pile up."""

    id = "slow"
    dim = 2

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def encode(self, texts, *, show_progress=False):
        import time

        self.batches.append(list(texts))
        time.sleep(0.05)
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


def test_query_batcher_encodes_concurrent_new_queries_together() -> None:
    from shopaug.serve.catalog_backend import QueryBatcher

    encoder = SlowEncoder()
    batcher = QueryBatcher(encoder, max_batch=32)
    texts = [f"query {'x' * i}" for i in range(12)] + ["query "] * 4  # one text asked 5 times
    results: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(texts))

    def worker(index: int) -> None:
        barrier.wait()
        results[index] = batcher.encode(texts[index])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, text in enumerate(texts):
        np.testing.assert_array_equal(results[index], [len(text), 1.0])
    encoded = [t for batch in encoder.batches for t in batch]
    assert set(encoded) == set(texts)
    # requests that overlap share batches (and a text asked while pending is encoded once)
    assert len(encoder.batches) < len(set(texts)) and len(encoded) < len(texts)
