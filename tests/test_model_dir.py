"""Model directory descriptors: the kinds, and errors that name the file and what was expected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shopaug.errors import ConfigError
from shopaug.models.model_dir import (
    MODEL_DESCRIPTOR,
    MODEL_KINDS,
    AdaptedEncoder,
    is_hashing_model,
    is_query_tower,
    item_encoder_id,
    load_towers,
    load_trainable,
    model_version,
    query_tower_id,
    read_descriptor,
    write_descriptor,
    write_hashing_model,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "shopaug"


def write_raw_descriptor(directory: Path, payload: object) -> Path:
    """Write ``payload`` as the descriptor as it is (no checks: the file a user might write)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_DESCRIPTOR).write_text(json.dumps(payload), encoding="utf-8")
    return directory


def test_unknown_kind_names_the_file_and_the_known_kinds(tmp_path: Path) -> None:
    model = write_raw_descriptor(tmp_path / "m", {"kind": "word2vec"})
    with pytest.raises(ConfigError) as raised:
        read_descriptor(model)
    message = str(raised.value)
    assert str(model / MODEL_DESCRIPTOR) in message
    assert "'word2vec'" in message
    assert all(repr(kind) in message for kind in MODEL_KINDS)
    assert MODEL_KINDS == ("hashing", "query-tower", "two-tower-recommender")
    with pytest.raises(ConfigError, match="'kind'"):
        model_version(model)
    with pytest.raises(ConfigError, match="word2vec"):
        load_towers(model)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([1, 2], "JSON object"),
        ({"dim": 8}, "'kind'"),
        ({"kind": "hashing", "dim": 0}, "'dim'"),
        ({"kind": "query-tower"}, "'item_model'"),
        ({"kind": "query-tower", "item_model": ""}, "'item_model'"),
        ({"kind": "two-tower-recommender", "dim": 2, "max_history": 5}, "'item_ids'"),
        ({"kind": "two-tower-recommender", "item_ids": ["a", ""], "dim": 2}, "'item_ids'"),
        ({"kind": "two-tower-recommender", "item_ids": ["a"], "max_history": 5}, "'dim'"),
        ({"kind": "two-tower-recommender", "item_ids": ["a"], "dim": 2}, "'max_history'"),
    ],
)
def test_malformed_descriptors_name_the_field(tmp_path: Path, payload: object, field: str) -> None:
    model = write_raw_descriptor(tmp_path / "m", payload)
    with pytest.raises(ConfigError, match=field) as raised:
        read_descriptor(model)
    assert str(model / MODEL_DESCRIPTOR) in str(raised.value)


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / MODEL_DESCRIPTOR).write_text("{kind: hashing", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON") as raised:
        read_descriptor(model)
    assert MODEL_DESCRIPTOR in str(raised.value)


def test_kinds_are_told_apart(tmp_path: Path) -> None:
    hashing = write_hashing_model(tmp_path / "hashing", 16)
    tower = write_raw_descriptor(
        tmp_path / "tower", {"kind": "query-tower", "item_model": "minilm"}
    )
    assert is_hashing_model(hashing) and not is_query_tower(hashing)
    assert is_query_tower(tower) and not is_hashing_model(tower)
    assert not is_hashing_model(tmp_path) and not is_query_tower(tmp_path)


def test_missing_item_model_folder_names_the_descriptor(tmp_path: Path) -> None:
    tower = write_raw_descriptor(
        tmp_path / "tower", {"kind": "query-tower", "item_model": str(tmp_path / "gone")}
    )
    (tower / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ConfigError, match="item_model") as raised:
        model_version(tower)
    assert str(tower / MODEL_DESCRIPTOR) in str(raised.value)


def test_hashing_towers_are_one_encoder(tmp_path: Path) -> None:
    towers = load_towers(write_hashing_model(tmp_path / "m", 32))
    assert towers.query is towers.item
    assert towers.version == model_version(tmp_path / "m")


class FixedEncoder:
    """Returns the rows of ``vectors`` in turn (one per text)."""

    id = "fixed"
    dim = 2

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def encode(self, texts, *, show_progress=False):
        return self.vectors[: len(texts)]


def test_adapter_maps_then_normalises_like_nn_linear() -> None:
    weight = np.array([[2.0, 0.0], [1.0, 1.0]], dtype=np.float32)  # y = W x
    encoder = AdaptedEncoder(FixedEncoder(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)), weight)
    vectors = encoder.encode(["a", "b"])
    # (1, 0) -> (2, 1) / sqrt(5); (0, 1) -> (0, 1)
    np.testing.assert_allclose(vectors, [[2 / 5**0.5, 1 / 5**0.5], [0.0, 1.0]], atol=1e-6)
    assert encoder.id == item_encoder_id("fixed", weight) != "fixed"
    assert encoder.id.startswith("fixed+adapter@")
    with pytest.raises(ConfigError, match=r"\(2, 2\)"):
        AdaptedEncoder(FixedEncoder(np.zeros((1, 2), np.float32)), np.eye(3, dtype=np.float32))


def test_ids_separate_item_sides() -> None:
    eye = np.eye(2, dtype=np.float32)
    assert item_encoder_id("st@a", None) == "st@a"
    assert item_encoder_id("st@a", eye) != item_encoder_id("st@a", 2 * eye)
    assert query_tower_id("st@q", "st@a") != query_tower_id("st@q", "st@b")
    assert query_tower_id("st@q", "st@a").startswith("query-tower@")


def _descriptor_readers() -> dict[str, object]:
    """Every function that reads ``shopaug-model.json``, by name."""
    from shopaug.models.hashing_model import HashingProjection
    from shopaug.models.query_tower import read_item_model
    from shopaug.models.two_tower import TwoTowerRecommender

    return {
        "read_descriptor": read_descriptor,
        "model_version": model_version,
        "load_towers": load_towers,
        "load_trainable": load_trainable,
        "HashingProjection.load": HashingProjection.load,
        "read_item_model": read_item_model,
        "TwoTowerRecommender.load": TwoTowerRecommender.load,
    }


@pytest.mark.parametrize("reader", sorted(_descriptor_readers()))
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{kind: hashing", "not valid JSON"),
        (
            '{"kind": "two-tower-recommender", "item_ids": "ab", "dim": 2, "max_history": 5}',
            "field 'item_ids'",
        ),
        ('{"kind": "hashing", "dim": -3}', "field 'dim'"),
    ],
)
def test_every_reader_fails_alike_on_a_malformed_descriptor(
    tmp_path: Path, reader: str, text: str, expected: str
) -> None:
    """One reader: each caller raises the same ConfigError naming the file and the field
    (before, TwoTowerRecommender.load raised KeyError or JSONDecodeError and read_item_model
    answered None)."""
    model = tmp_path / "m"
    model.mkdir()
    (model / MODEL_DESCRIPTOR).write_text(text, encoding="utf-8")
    (model / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ConfigError, match=expected) as raised:
        _descriptor_readers()[reader](model)  # type: ignore[operator]
    assert str(model / MODEL_DESCRIPTOR) in str(raised.value)


def test_a_recommender_is_told_apart_and_refused_as_a_search_model(tmp_path: Path) -> None:
    from shopaug.models.two_tower import TwoTowerRecommender
    from shopaug.serve.recommender_backend import is_recommender_dir

    model = TwoTowerRecommender(["a", "b"], np.eye(2, dtype=np.float32), max_history=7)
    model.save(tmp_path / "rec")
    assert read_descriptor(tmp_path / "rec") == {
        "kind": "two-tower-recommender",
        "item_ids": ["a", "b"],
        "dim": 2,
        "max_history": 7,
    }
    assert is_recommender_dir(tmp_path / "rec")
    assert not is_recommender_dir(write_hashing_model(tmp_path / "hashing", 8))
    assert not is_recommender_dir(tmp_path)  # no descriptor: a sentence-transformers folder
    assert not is_hashing_model(tmp_path / "rec") and not is_query_tower(tmp_path / "rec")
    loaded = TwoTowerRecommender.load(tmp_path / "rec")
    assert loaded.item_ids == ("a", "b") and loaded.max_history == 7
    for loader in (model_version, load_towers, load_trainable):
        with pytest.raises(ConfigError, match="recommendation model") as raised:
            loader(tmp_path / "rec")
        assert str(tmp_path / "rec" / MODEL_DESCRIPTOR) in str(raised.value)
    with pytest.raises(ConfigError, match="expected 'two-tower-recommender'"):
        TwoTowerRecommender.load(tmp_path / "hashing")
    with pytest.raises(FileNotFoundError, match=MODEL_DESCRIPTOR):
        TwoTowerRecommender.load(tmp_path)


def test_write_descriptor_refuses_an_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="word2vec"):
        write_descriptor(tmp_path / "m", {"kind": "word2vec"})
    assert not (tmp_path / "m").exists()
    path = write_descriptor(tmp_path / "m", {"kind": "query-tower", "item_model": "minilm"})
    assert path == tmp_path / "m" / MODEL_DESCRIPTOR
    assert read_descriptor(tmp_path / "m") == {"kind": "query-tower", "item_model": "minilm"}


def _string_constants(value: str) -> list[str]:
    """The modules under src/ that spell ``value`` as a string literal of its own."""
    import ast

    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.Constant) and n.value == value for n in ast.walk(tree)):
            found.append(path.relative_to(SRC).as_posix())
    return found


def test_the_descriptor_and_the_cache_file_are_named_once() -> None:
    assert _string_constants("shopaug-model.json") == ["models/model_dir.py"]
    assert _string_constants("embeddings.sqlite") == ["encoders/cache.py"]
