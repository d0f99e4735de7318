"""The fast serving path: ONNX Runtime (fp32, int8) and a distilled static model behind the
``Encoder`` protocol, and the service under each runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("model2vec")
pytest.importorskip("fastapi")
import torch
from fastapi.testclient import TestClient
from sentence_transformers import SentenceTransformer, models
from transformers import BertConfig, BertModel, BertTokenizerFast

from shopaug.data.records import Dataset, Product
from shopaug.encoders.base import Encoder
from shopaug.encoders.dense import model_id
from shopaug.encoders.exports import EXPORT_FOLDER, EXPORT_RECORD, export_dir
from shopaug.encoders.onnx import OnnxEncoder, export_onnx
from shopaug.encoders.static import StaticEncoder
from shopaug.errors import ConfigError
from shopaug.models.model_dir import model_version, write_hashing_model
from shopaug.serve import Settings, create_app
from shopaug.serve.catalog_backend import CatalogLoader
from shopaug.serve.runtime import ENCODER_RUNTIMES, ServingOptions

WORDS = [
    "red",
    "blue",
    "green",
    "oak",
    "velvet",
    "brass",
    "chair",
    "table",
    "lamp",
    "sofa",
    "rug",
    "desk",
    "floor",
    "coffee",
]
TITLES = [
    "red chair",
    "blue velvet sofa",
    "oak coffee table",
    "brass floor lamp",
    "green rug",
    "oak desk",
    "blue lamp",
    "red velvet chair",
]
QUERIES = ["red chair", "oak table", "lamp", "blue sofa velvet", "green floor rug"]
PRODUCTS = [Product(id=f"p{i}", title=title) for i, title in enumerate(TITLES)]
DIM = 32


def tiny_model(directory: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-d random BERT over WORDS as a sentence-transformers folder."""
    hf = directory / "hf"
    hf.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)})
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=DIM,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    modules = [models.Transformer(str(hf)), models.Pooling(DIM, "mean"), models.Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(directory / "st"))
    return directory / "st"


def torch_vectors(folder: Path, texts: list[str]) -> np.ndarray:
    """Reference vectors straight from sentence-transformers."""
    model = SentenceTransformer(str(folder), device="cpu")
    return model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("onnx"))


def test_fp32_onnx_vectors_match_torch(model: Path) -> None:
    encoder = OnnxEncoder(model, precision="fp32")
    assert isinstance(encoder, Encoder)
    texts = [*TITLES, *QUERIES]  # one batch of different lengths: padding must not leak
    vectors = encoder.encode(texts)
    assert vectors.shape == (len(texts), DIM) and vectors.dtype == np.float32
    assert cosines(vectors, torch_vectors(model, texts)).min() > 0.999
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # one text alone gives the same vector as inside the padded batch
    np.testing.assert_allclose(encoder.encode(["red chair"])[0], vectors[0], atol=1e-5)
    assert encoder.id == f"{model_id(model)}+onnx-fp32"
    assert encoder.encode([]).shape == (0, DIM)


def test_int8_vectors_are_close_and_keep_the_ranking(model: Path) -> None:
    reference = torch_vectors(model, QUERIES)
    items = torch_vectors(model, TITLES)
    int8 = OnnxEncoder(model, precision="int8")
    vectors = int8.encode(QUERIES)
    assert cosines(vectors, reference).min() > 0.95
    top = (vectors @ items.T).argmax(axis=1)
    assert (top == (reference @ items.T).argmax(axis=1)).mean() >= 0.8
    assert int8.id.endswith("+onnx-int8")


def test_exports_are_cached_beside_the_model_and_redone_for_new_weights(
    tmp_path: Path, model: Path
) -> None:
    folder = export_dir(model)
    assert folder == model / EXPORT_FOLDER
    first = export_onnx(model)
    stamp = first.stat().st_mtime_ns
    assert export_onnx(model) == first and first.stat().st_mtime_ns == stamp  # reused
    record = json.loads((folder / EXPORT_RECORD).read_text())
    assert record["model_id"] == model_id(model)
    assert record["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    # new weights in a copy of the folder: its stale export is replaced
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    other = tiny_model(tmp_path / "other", seed=5)
    shutil.copy(other / "model.safetensors", copy / "model.safetensors")
    export_onnx(copy)
    assert json.loads((copy / EXPORT_FOLDER / EXPORT_RECORD).read_text())["model_id"] == model_id(
        other
    )
    np.testing.assert_allclose(
        OnnxEncoder(copy).encode(TITLES), torch_vectors(other, TITLES), atol=1e-4
    )


def test_precision_is_checked(model: Path) -> None:
    with pytest.raises(ConfigError, match="precision"):
        export_onnx(model, precision="fp16")


def test_static_encoder_is_a_bag_of_tokens(tmp_path: Path) -> None:
    model = tiny_model(tmp_path, seed=2)
    encoder = StaticEncoder(model, pca_dims=8)
    assert isinstance(encoder, Encoder)
    vectors = encoder.encode(["red velvet chair", "chair velvet red", "oak desk"])
    assert vectors.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)  # word order does not count
    assert float(vectors[0] @ vectors[2]) < 0.99
    assert encoder.id.startswith("static@")
    assert (export_dir(model) / "static-8" / EXPORT_RECORD).is_file()
    again = StaticEncoder(model, pca_dims=8)  # loaded from the export, not distilled again
    assert again.id == encoder.id


def catalog() -> Dataset:
    return Dataset(name="tiny", products=list(PRODUCTS), queries=[], judgments=[], gains={})


def serve(run: Path, options: ServingOptions) -> TestClient:
    loader = CatalogLoader(run, dataset=catalog(), cache_dir=run / "cache", options=options)
    return TestClient(create_app(Settings(run_dir=run), loader))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served")
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: demo\ntext_fields: [title]\n", encoding="utf-8")
    st = tiny_model(root / "model", seed=3)
    SentenceTransformer(str(st), device="cpu").save(str(run / "model"))
    return run


@pytest.mark.parametrize("runtime", ENCODER_RUNTIMES)
def test_the_service_answers_under_every_runtime(run_dir: Path, runtime: str) -> None:
    model = run_dir / "model"
    items = torch_vectors(model, TITLES)
    options = ServingOptions(encoder_runtime=runtime)  # type: ignore[arg-type]
    with serve(run_dir, options) as client:
        assert client.get("/readyz").json()["model_version"] == model_version(model)
        for row, title in enumerate(TITLES):  # a product's own title finds it first
            body = client.get("/search", params={"q": title, "k": 3}).json()
            assert body["results"][0]["product_id"] == PRODUCTS[row].id
        if runtime in ("torch", "onnx"):  # the same ranking as the model in torch
            for query in QUERIES:
                body = client.get("/search", params={"q": query, "k": 8}).json()
                scores = items @ torch_vectors(model, [query])[0]
                expected = [PRODUCTS[r].id for r in np.argsort(-scores, kind="stable")]
                assert [hit["product_id"] for hit in body["results"]] == expected


def test_a_hashing_model_has_no_onnx_runtime(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: demo\ntext_fields: [title]\n", encoding="utf-8")
    write_hashing_model(run / "model", 64)
    loader = CatalogLoader(
        run, dataset=catalog(), cache_dir=tmp_path, options=ServingOptions(encoder_runtime="onnx")
    )
    with pytest.raises(ConfigError, match="hashing model"):
        loader(run / "model")


def test_unknown_runtime_is_refused() -> None:
    with pytest.raises(ConfigError, match="encoder_runtime"):
        ServingOptions(encoder_runtime="tensorrt")  # type: ignore[arg-type]
