"""Serving a query tower and a BM25 fusion: catalog vectors from the item model (through the
adapter), queries from the fine-tuned query encoder, and ``fusion.json`` ranking as the run
evaluated it. The towers are tiny random BERTs built here (no download, seconds)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sentence_transformers")
import torch
from fastapi.testclient import TestClient
from sentence_transformers import SentenceTransformer, models
from transformers import BertConfig, BertModel, BertTokenizerFast

from shopaug.data.records import Dataset, Product
from shopaug.encoders.dense import SentenceTransformerEncoder
from shopaug.models.bi_encoder import BiEncoder
from shopaug.models.model_dir import (
    QUERY_TOWER_KIND,
    is_query_tower,
    load_towers,
    load_trainable,
    model_version,
    read_descriptor,
)
from shopaug.models.query_tower import ADAPTER_FILE, QueryTowerModel
from shopaug.retrieval.fusion import FusionSpec
from shopaug.retrieval.retrievers import BM25Retriever
from shopaug.serve import Settings, create_app
from shopaug.serve.catalog_backend import CatalogBackend, CatalogLoader
from shopaug.serve.runtime import ServingOptions

WORDS = [
    "red",
    "blue",
    "green",
    "oak",
    "brass",
    "velvet",
    "chair",
    "table",
    "lamp",
    "sofa",
    "desk",
    "floor",
    "rug",
]
TITLES = [
    "red chair",
    "blue table",
    "green lamp",
    "red table lamp",
    "oak desk",
    "brass floor lamp",
    "velvet sofa",
    "blue rug",
]
CATEGORIES = ["chairs", "tables", "lamps", "lamps", "desks", "lamps", "sofas", "rugs"]
PRODUCTS = [
    Product(id=f"p{i + 1}", title=title, category=(category,))
    for i, (title, category) in enumerate(zip(TITLES, CATEGORIES))
]
DIM = 16


def tiny_sentence_transformer(directory: Path, seed: int) -> Path:
    """A 1-layer, 16-d random BERT over WORDS as a sentence-transformers folder."""
    hf = directory / "hf"
    hf.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)})
    assert tokenizer("red chair")["input_ids"] == [2, 5, 11, 3]  # no [UNK] (id 1)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=DIM,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=256,
    )
    BertModel(config).save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    modules = [
        models.Transformer(str(hf), max_seq_length=64),
        models.Pooling(DIM, "mean"),
        models.Normalize(),
    ]
    SentenceTransformer(modules=modules, device="cpu").save(str(directory / "st"))
    return directory / "st"


def st_vectors(folder: Path, texts: list[str]) -> np.ndarray:
    """Reference vectors straight from sentence-transformers (not through shopaug)."""
    model = SentenceTransformer(str(folder), device="cpu")
    return model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)


def normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def towers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The item model (seed 0), a different query start (seed 1), and a run whose model/ is
    the query tower over them with a random item adapter."""
    root = tmp_path_factory.mktemp("towers")
    item = tiny_sentence_transformer(root / "item", seed=0)
    query = tiny_sentence_transformer(root / "query", seed=1)
    tower = QueryTowerModel(
        BiEncoder(query), SentenceTransformerEncoder(item), str(item), item_adapter=True
    )
    assert tower.item_adapter is not None
    weight = np.random.default_rng(0).normal(size=(DIM, DIM)).astype(np.float32)
    with torch.no_grad():
        tower.item_adapter.weight.copy_(torch.from_numpy(weight))
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: demo\ntext_fields: [title]\n", encoding="utf-8")
    tower.save(run / "model")
    np.save(root / "adapter.npy", weight)
    return {"item": item, "query": query, "run": run, "adapter": root / "adapter.npy"}


def catalog() -> Dataset:
    return Dataset(name="tiny", products=list(PRODUCTS), queries=[], judgments=[], gains={})


def serve(run: Path, cache: Path) -> TestClient:
    # torch: the tests compare the served vectors with the towers' own (sentence-transformers)
    options = ServingOptions(encoder_runtime="torch")
    loader = CatalogLoader(run, dataset=catalog(), cache_dir=cache, options=options)
    return TestClient(create_app(Settings(run_dir=run), loader))


@pytest.fixture
def client(towers, tmp_path: Path) -> Iterator[TestClient]:
    with serve(towers["run"], tmp_path / "cache") as c:
        yield c


def backend_of(client: TestClient) -> CatalogBackend:
    backend = client.app.state.runtime.holder.backend  # type: ignore[attr-defined]
    assert isinstance(backend, CatalogBackend)
    return backend


def dense_scores(towers, query: str) -> np.ndarray:
    """The query encoder's query vector against the item model's adapted vectors."""
    weight = np.load(towers["adapter"])
    items = normalised(st_vectors(towers["item"], TITLES) @ weight.T)  # (n, dim)
    return items @ st_vectors(towers["run"] / "model", [query])[0]  # (n,)


def test_the_descriptor_is_a_query_tower(towers) -> None:
    model = towers["run"] / "model"
    assert is_query_tower(model)
    assert read_descriptor(model) == {
        "kind": QUERY_TOWER_KIND,
        "item_model": str(towers["item"]),
        "item_adapter": ADAPTER_FILE,
    }
    assert model_version(model).startswith("query-tower@")


def test_catalog_vectors_are_the_item_models_through_the_adapter(client, towers) -> None:
    backend = backend_of(client)
    weight = np.load(towers["adapter"])
    expected = normalised(st_vectors(towers["item"], TITLES) @ weight.T)
    np.testing.assert_allclose(backend.item_vectors, expected, atol=1e-5)
    # not the query encoder's vectors of the same texts, nor the unadapted item vectors
    query_side = st_vectors(towers["run"] / "model", TITLES)
    assert np.abs(backend.item_vectors - query_side).max() > 0.1
    assert np.abs(backend.item_vectors - st_vectors(towers["item"], TITLES)).max() > 0.1


def test_queries_go_through_the_query_encoder(client, towers) -> None:
    version = model_version(towers["run"] / "model")
    assert client.get("/readyz").json()["model_version"] == version
    assert client.get("/model").json() == {"model_version": version, "ranking": "dense"}
    body = client.get("/search", params={"q": "red lamp", "k": 8}).json()
    scores = dense_scores(towers, "red lamp")
    order = sorted(range(len(TITLES)), key=lambda row: (-scores[row], row))
    assert [r["product_id"] for r in body["results"]] == [PRODUCTS[r].id for r in order]
    np.testing.assert_allclose([r["score"] for r in body["results"]], scores[order], atol=1e-5)
    assert body["model_version"] == version


def test_the_item_side_has_its_own_cache_id(towers) -> None:
    loaded = load_towers(towers["run"] / "model")
    assert loaded.query.id == model_version(towers["run"] / "model")
    item_id = SentenceTransformerEncoder(towers["item"]).id
    assert loaded.item.id.startswith(item_id + "+adapter@")
    without_adapter = towers["run"].parent / "no-adapter"
    shutil.copytree(towers["run"] / "model", without_adapter)
    (without_adapter / ADAPTER_FILE).unlink()
    plain = load_towers(without_adapter)
    assert plain.item.id == item_id  # the frozen item model's own vectors, shared
    assert plain.query.id != loaded.query.id


def reference_convex(dense: dict[str, float], bm25: dict[str, float], weight: float) -> list:
    """weight * minmax(dense) + (1 - weight) * minmax(bm25); absent from a list: 0 there."""

    def minmax(scores: dict[str, float]) -> dict[str, float]:
        low, high = min(scores.values()), max(scores.values())
        return {p: (s - low) / (high - low) if high > low else 1.0 for p, s in scores.items()}

    a, b = minmax(dense), minmax(bm25) if bm25 else {}
    fused = {p: weight * a.get(p, 0.0) + (1 - weight) * b.get(p, 0.0) for p in a.keys() | b}
    return sorted(fused, key=lambda p: (-fused[p], p))


def test_fusion_json_ranks_with_the_fusion(towers, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(towers["run"], run)
    (run / "model" / "fusion.json").write_text(
        json.dumps({"method": "convex", "weight": 0.6}), encoding="utf-8"
    )
    query = "red lamp"
    scores = dense_scores(towers, query)
    dense = {PRODUCTS[row].id: float(s) for row, s in enumerate(scores)}
    rows, found = BM25Retriever(TITLES).search([query], len(TITLES))
    bm25 = {PRODUCTS[int(r)].id: float(s) for r, s in zip(rows[0], found[0]) if r >= 0}
    expected = reference_convex(dense, bm25, 0.6)
    assert expected != sorted(dense, key=lambda p: (-dense[p], p))  # fusion changes it
    with serve(run, tmp_path / "cache") as client:
        assert client.get("/model").json()["ranking"] == "dense + bm25 (convex, weight 0.6)"
        body = client.get("/search", params={"q": query, "k": 8}).json()
        assert [r["product_id"] for r in body["results"]] == expected
        top3 = client.get("/search", params={"q": query, "k": 3}).json()
        assert [r["product_id"] for r in top3["results"]] == expected[:3]


# -- known answers of the fusion on four products, hand-computed --------------------------


class FixedQueryEncoder:
    id = "fixed"
    dim = 2

    def encode(self, texts, *, show_progress=False):
        return np.tile(np.array([1.0, 0.0], dtype=np.float32), (len(texts), 1))


def four_products(fusion: FusionSpec | None) -> CatalogBackend:
    """Dense cosines 1.0, 0.8, 0.5, 0.2 (p1 > p2 > p4 > p3 after the swap below); BM25 for
    'lamp' matches p3 ('green lamp', shorter, first) and p4 ('red table lamp')."""
    titles = ["red chair", "blue table", "green lamp", "red table lamp"]
    categories = ["chairs", "tables", "lamps", "lamps"]
    products = [
        Product(id=f"p{i + 1}", title=t, category=(c,))
        for i, (t, c) in enumerate(zip(titles, categories))
    ]
    cosines = np.array([1.0, 0.8, 0.2, 0.5])
    vectors = np.stack([cosines, np.sqrt(1 - cosines**2)], axis=1).astype(np.float32)
    return CatalogBackend(
        "v", products, vectors, FixedQueryEncoder(), fusion=fusion, bm25=BM25Retriever(titles)
    )


def ranked(backend: CatalogBackend, k: int = 4, category: str | None = None) -> list[str]:
    filters = None if category is None else {"category": category}
    return [hit.product_id for hit in backend.search("lamp", k, filters)]


def test_known_answers_of_the_fusions() -> None:
    assert ranked(four_products(None)) == ["p1", "p2", "p4", "p3"]
    convex = four_products(FusionSpec("convex", weight=0.6))
    # dense minmax 1, .75, 0, .375; bm25 minmax p3 1, p4 0 -> .6, .45, .4, .225
    assert ranked(convex) == ["p1", "p2", "p3", "p4"]
    np.testing.assert_allclose(
        [hit.score for hit in convex.search("lamp", 4, None)], [0.6, 0.45, 0.4, 0.225], atol=1e-6
    )
    rrf = four_products(FusionSpec("rrf"))
    # p3: 1/64 + 1/61 > p4: 1/63 + 1/62 > p1: 1/61 > p2: 1/62
    assert ranked(rrf) == ["p3", "p4", "p1", "p2"]
    assert ranked(rrf, k=2) == ["p3", "p4"]
    # the filter applies before fusing: among lamps dense is p4 > p3, BM25 p3 > p4
    assert ranked(convex, category="lamps") == ["p4", "p3"]  # .6 against .4
    assert ranked(rrf, category="lamps") == ["p3", "p4"]  # a tie, broken by product id
    assert ranked(convex, category="sofas") == []
    assert rrf.ranking == "dense + bm25 (rrf)"


def test_a_fusion_needs_bm25() -> None:
    with pytest.raises(ValueError, match="bm25"):
        CatalogBackend(
            "v",
            PRODUCTS[:1],
            np.ones((1, 2), np.float32),
            FixedQueryEncoder(),
            fusion=FusionSpec("rrf"),
        )


def test_malformed_fusion_json_fails_the_load(towers, tmp_path: Path) -> None:
    from shopaug.errors import ConfigError

    run = tmp_path / "run"
    shutil.copytree(towers["run"], run)
    (run / "model" / "fusion.json").write_text('{"method": "convex"}', encoding="utf-8")
    loader = CatalogLoader(run, dataset=catalog(), cache_dir=tmp_path / "cache")
    with pytest.raises(ConfigError, match=r"fusion\.json: field 'weight'"):
        loader(run / "model")


# -- the online loop retrains a query tower ----------------------------------------------


def test_online_fine_tune_keeps_a_query_tower(towers, tmp_path: Path, monkeypatch) -> None:
    from shopaug.online.retrain import OnlineConfig, fine_tune
    from shopaug.train import TrainingExample

    monkeypatch.setenv("SHOPAUG_CACHE_DIR", str(tmp_path / "cache"))
    champion = tmp_path / "champion"
    shutil.copytree(towers["run"] / "model", champion)
    (champion / "fusion.json").write_text('{"method": "rrf"}', encoding="utf-8")
    assert isinstance(load_trainable(champion), QueryTowerModel)
    examples = [
        TrainingExample(query="lamp", positive="green lamp", negatives=["red chair"]),
        TrainingExample(query="sofa", positive="velvet sofa", negatives=["oak desk"]),
    ]
    config = OnlineConfig(steps=2, batch_size=2, lr=1e-2, negatives_per_example=1)
    challenger = fine_tune(champion, examples, tmp_path / "round", config)
    assert read_descriptor(challenger) == read_descriptor(champion)  # same kind and item model
    assert (challenger / "fusion.json").read_text("utf-8") == '{"method": "rrf"}'
    assert model_version(challenger) != model_version(champion)
    before, after = load_towers(champion), load_towers(challenger)
    texts = ["red chair", "green lamp"]
    assert np.abs(before.query.encode(texts) - after.query.encode(texts)).max() > 0


def test_a_relative_item_model_cannot_be_retrained(towers, tmp_path: Path) -> None:
    from shopaug.errors import ConfigError

    model = tmp_path / "run" / "model"
    shutil.copytree(towers["run"] / "model", model)
    shutil.copytree(towers["item"], tmp_path / "run" / "item")
    descriptor = {"kind": QUERY_TOWER_KIND, "item_model": "../item"}
    (model / "shopaug-model.json").write_text(json.dumps(descriptor), encoding="utf-8")
    item_id = SentenceTransformerEncoder(towers["item"]).id
    assert load_towers(model).item.id.startswith(item_id + "+adapter@")  # read beside it
    with pytest.raises(ConfigError, match="relative path"):
        load_trainable(model)
