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
    model_version,
    query_tower_id,
    read_descriptor,
    write_hashing_model,
)


def write_descriptor(directory: Path, payload: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_DESCRIPTOR).write_text(json.dumps(payload), encoding="utf-8")
    return directory


def test_unknown_kind_names_the_file_and_the_known_kinds(tmp_path: Path) -> None:
    model = write_descriptor(tmp_path / "m", {"kind": "word2vec"})
    with pytest.raises(ConfigError) as raised:
        read_descriptor(model)
    message = str(raised.value)
    assert str(model / MODEL_DESCRIPTOR) in message
    assert "'word2vec'" in message
    assert all(repr(kind) in message for kind in MODEL_KINDS)
    assert MODEL_KINDS == ("hashing", "query-tower")
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
    ],
)
def test_malformed_descriptors_name_the_field(tmp_path: Path, payload: object, field: str) -> None:
    model = write_descriptor(tmp_path / "m", payload)
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
    tower = write_descriptor(tmp_path / "tower", {"kind": "query-tower", "item_model": "minilm"})
    assert is_hashing_model(hashing) and not is_query_tower(hashing)
    assert is_query_tower(tower) and not is_hashing_model(tower)
    assert not is_hashing_model(tmp_path) and not is_query_tower(tmp_path)


def test_missing_item_model_folder_names_the_descriptor(tmp_path: Path) -> None:
    tower = write_descriptor(
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
