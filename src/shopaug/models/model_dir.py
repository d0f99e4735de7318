"""What a served model directory holds, and how to encode with it or fine-tune it.

Three kinds of model directory are served and retrained online:

* a **sentence-transformers folder** (``model.safetensors``, tokenizer, config), as ``shopaug
  run`` and :meth:`shopaug.models.BiEncoder.save` write it;
* a **hashing model**: a folder with the descriptor ``shopaug-model.json``::

      {"kind": "hashing", "dim": 256}

  and optionally ``projection.safetensors``, a ``(dim, dim)`` linear map applied to the
  :class:`~shopaug.encoders.base.HashingEncoder` features before L2 normalisation. Without the
  file the map is the identity, so the model is exactly the hashing encoder. It needs no
  download and trains in milliseconds, which is what tests and demos of the online loop use;
* a **query tower** (:class:`shopaug.models.query_tower.QueryTowerModel`): a
  sentence-transformers folder holding the fine-tuned *query* encoder, with the descriptor::

      {"kind": "query-tower", "item_model": "minilm"}

  and optionally ``item_adapter.safetensors``, a ``(dim, dim)`` linear map applied to the
  frozen item model's vectors before L2 normalisation. Queries are encoded by the folder's
  encoder, the catalog by ``item_model`` (``"minilm"`` or a sentence-transformers folder;
  a relative path is read from the model directory first) through the adapter.

A fourth kind, the **two-tower recommender** of a ``task: recommend`` run
(:mod:`shopaug.models.two_tower`), shares the descriptor file::

    {"kind": "two-tower-recommender", "item_ids": ["a", "b"], "dim": 384, "max_history": 50}

It is served by the recommendation backend, not as a search encoder: the loaders below refuse
it with an error that says so. :func:`read_descriptor` is the one reader of the descriptor
file of every kind and :func:`write_descriptor` its one writer.

:func:`load_towers` gives both encoders of a directory (one object for the single-tower
kinds), :func:`load_encoder` the query side and :func:`load_item_encoder` the catalog side.

The model **version** is the one id of its weights (:func:`model_version`): for a
sentence-transformers folder :func:`shopaug.encoders.dense.model_id` (``st@<sha256 prefix of
the safetensors>``, what the dense encoder and the bi-encoder report too), for a hashing model
:func:`hashing_model_id` of its map (what :class:`~shopaug.models.hashing_model.HashingProjection`
reports), for a query tower :func:`query_tower_id` of its query weights and item side. A
copy of a model under another name keeps its version and its cached embeddings. The item
encoder of a query tower carries the id of its own vectors (the item model's, plus the
adapter's hash), so the catalog vectors of the frozen base model are encoded once and shared
by every query tower trained on top of it.

Why one module of this length: the three directory kinds share the descriptor parsing and
the version hashing, and their read rules are easiest to check side by side.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shopaug.encoders.base import Encoder, HashingEncoder
from shopaug.errors import ConfigError

logger = logging.getLogger(__name__)

#: The descriptor file of a model directory (every kind but a plain sentence-transformers folder).
MODEL_DESCRIPTOR = "shopaug-model.json"
#: Weights of the optional linear map of a hashing model.
PROJECTION_FILE = "projection.safetensors"
HASHING_KIND = "hashing"
DEFAULT_HASHING_DIM = 256
#: The kind and adapter file of a query tower, as :mod:`shopaug.models.query_tower` writes
#: them (repeated here so that reading a descriptor does not import torch).
QUERY_TOWER_KIND = "query-tower"
ITEM_ADAPTER_FILE = "item_adapter.safetensors"
#: The kind of :class:`shopaug.models.two_tower.TwoTowerRecommender` (a recommendation model).
RECOMMENDER_KIND = "two-tower-recommender"
#: Every ``kind`` a descriptor may name.
MODEL_KINDS = (HASHING_KIND, QUERY_TOWER_KIND, RECOMMENDER_KIND)


def hashing_model_id(weight: np.ndarray) -> str:
    """The one id of a hashing model: ``hashing@<sha256 prefix of its (dim, dim) map>``.

    The identity map of a directory without ``projection.safetensors`` hashes like an
    explicit identity, so both name the same vectors.
    """
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    digest = hashlib.sha256(f"{weight.shape}".encode())
    digest.update(weight.tobytes())
    return f"hashing@{digest.hexdigest()[:16]}"


def read_projection(model_dir: Path, dim: int) -> np.ndarray | None:
    """The ``(dim, dim)`` map in ``projection.safetensors``, or None when there is no file.

    Raises:
        ConfigError: the file has no ``weight`` of shape ``(dim, dim)``.
    """
    path = Path(model_dir) / PROJECTION_FILE
    if not path.is_file():
        return None
    from safetensors.numpy import load_file

    weight = load_file(str(path)).get("weight")
    if weight is None or weight.shape != (dim, dim):
        shape = None if weight is None else weight.shape
        raise ConfigError(f"{path}: 'weight' has shape {shape}; expected ({dim}, {dim})")
    return weight


def read_descriptor(model_dir: Path) -> dict[str, Any] | None:
    """The parsed ``shopaug-model.json`` of ``model_dir``, or None when there is none.

    The one reader of the descriptor, for every kind. A hashing descriptor gets its default
    ``dim``; a query-tower descriptor must name its ``item_model``; a recommender descriptor
    must list its ``item_ids`` and give a positive ``dim`` and ``max_history``.

    Raises:
        ConfigError: the file cannot be read, is not a JSON object with a known ``kind`` (the
            message names the file and the known kinds), or a field of that kind is malformed
            (the message names the file and the field).
    """
    path = Path(model_dir) / MODEL_DESCRIPTOR
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} cannot be read: {error}") from error
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(payload, dict):
        raise ConfigError(f"{path}: expected a JSON object with a 'kind', got {payload!r}")
    kind = payload.get("kind")
    if kind == HASHING_KIND:
        payload.setdefault("dim", DEFAULT_HASHING_DIM)
        _check_positive_int(path, payload, "dim")
        return payload
    if kind == QUERY_TOWER_KIND:
        item_model = payload.get("item_model")
        if not isinstance(item_model, str) or not item_model:
            raise ConfigError(
                f"{path}: field 'item_model' must name the item model ('minilm' or a "
                f"sentence-transformers folder), got {item_model!r}"
            )
        return payload
    if kind == RECOMMENDER_KIND:
        item_ids = payload.get("item_ids")
        if not isinstance(item_ids, list) or not all(
            isinstance(item, str) and item for item in item_ids
        ):
            raise ConfigError(
                f"{path}: field 'item_ids' must be a list of non-empty item ids, got "
                f"{str(item_ids)[:80]}"
            )
        _check_positive_int(path, payload, "dim")
        _check_positive_int(path, payload, "max_history")
        return payload
    raise ConfigError(f"{path}: field 'kind' must be one of {MODEL_KINDS}, got {kind!r}")


def _check_positive_int(path: Path, payload: dict[str, Any], field: str) -> None:
    value = payload.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{path}: field {field!r} must be a positive integer, got {value!r}")


def write_descriptor(directory: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as the descriptor of ``directory`` (made if missing); return the file.

    Raises:
        ConfigError: ``payload`` is not a descriptor :func:`read_descriptor` accepts (checked
            before anything is written).
    """
    kind = payload.get("kind")
    if kind not in MODEL_KINDS:
        raise ConfigError(f"descriptor kind must be one of {MODEL_KINDS}, got {kind!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MODEL_DESCRIPTOR
    path.write_text(json.dumps(payload) + "\n", encoding="utf-8")
    return path


def _search_descriptor(model_dir: Path) -> dict[str, Any] | None:
    """:func:`read_descriptor` of a directory that must hold a search model.

    Raises:
        ConfigError: it holds a two-tower recommender (the message names the file).
    """
    descriptor = read_descriptor(model_dir)
    if descriptor is not None and descriptor["kind"] == RECOMMENDER_KIND:
        raise ConfigError(
            f"{Path(model_dir) / MODEL_DESCRIPTOR}: kind {RECOMMENDER_KIND!r} is a recommendation "
            "model (task: recommend); it has no query encoder for search"
        )
    return descriptor


def is_hashing_model(model_dir: Path) -> bool:
    """True when ``model_dir`` holds a hashing-model descriptor."""
    descriptor = read_descriptor(model_dir)
    return descriptor is not None and descriptor["kind"] == HASHING_KIND


def is_query_tower(model_dir: Path) -> bool:
    """True when ``model_dir`` holds a query-tower descriptor."""
    descriptor = read_descriptor(model_dir)
    return descriptor is not None and descriptor["kind"] == QUERY_TOWER_KIND


def item_model_path(model_dir: Path, item_model: str) -> str | Path:
    """Where the ``item_model`` of a query tower in ``model_dir`` is: ``"minilm"`` as it is, a
    folder relative to ``model_dir`` when there is one, else the path as written.

    Raises:
        ConfigError: the folder does not exist (the message names the descriptor).
    """
    if item_model == "minilm":
        return item_model
    candidates = [Path(item_model)]
    if not Path(item_model).is_absolute():
        candidates.insert(0, Path(model_dir) / item_model)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise ConfigError(
        f"{Path(model_dir) / MODEL_DESCRIPTOR}: item_model {item_model!r} is neither 'minilm' "
        "nor a sentence-transformers folder (looked beside the descriptor and in the working "
        "directory)"
    )


def read_item_adapter(model_dir: Path) -> np.ndarray | None:
    """The ``(dim, dim)`` item adapter of a query tower, or None when there is no file.

    Raises:
        ConfigError: the file has no square 2-D ``weight``.
    """
    path = Path(model_dir) / ITEM_ADAPTER_FILE
    if not path.is_file():
        return None
    from safetensors.numpy import load_file

    weight = load_file(str(path)).get("weight")
    if weight is None or weight.ndim != 2 or weight.shape[0] != weight.shape[1]:
        shape = None if weight is None else weight.shape
        raise ConfigError(f"{path}: 'weight' has shape {shape}; expected (dim, dim)")
    return np.ascontiguousarray(weight, dtype=np.float32)


def adapter_id(weight: np.ndarray) -> str:
    """``adapter@<sha256 prefix of the (dim, dim) item adapter>``."""
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    digest = hashlib.sha256(f"{weight.shape}".encode())
    digest.update(weight.tobytes())
    return f"adapter@{digest.hexdigest()[:16]}"


def item_encoder_id(item_model_id: str, adapter: np.ndarray | None) -> str:
    """The id of a query tower's catalog vectors: the item model's id, ``+adapter@<hash>``
    when an adapter maps them (without one they are the item model's own vectors)."""
    return item_model_id if adapter is None else f"{item_model_id}+{adapter_id(adapter)}"


def query_tower_id(query_weights_id: str, item_id: str) -> str:
    """The version of a query tower: ``query-tower@<sha256 prefix>`` of the query encoder's
    weights id and the id of its catalog vectors (:func:`item_encoder_id`)."""
    digest = hashlib.sha256(f"{query_weights_id}\n{item_id}".encode()).hexdigest()
    return f"query-tower@{digest[:16]}"


def _query_tower_ids(model_dir: Path, descriptor: dict[str, Any]) -> tuple[str, str]:
    """(version, item encoder id) of a query tower, computed from file hashes only."""
    from shopaug.encoders.dense import minilm_path, model_id

    item_model = item_model_path(model_dir, str(descriptor["item_model"]))
    item_path = minilm_path() if item_model == "minilm" else Path(item_model)
    item_id = item_encoder_id(model_id(item_path), read_item_adapter(model_dir))
    return query_tower_id(model_id(model_dir), item_id), item_id


def model_version(model_dir: str | Path) -> str:
    """The version of a model directory: the one id of its weights (see the module docstring).

    Raises:
        FileNotFoundError: the directory holds neither a descriptor nor safetensors weights.
        ConfigError: a descriptor or a hashing model's weights are malformed, or the
            directory holds a recommender.
    """
    model_dir = Path(model_dir)
    descriptor = _search_descriptor(model_dir)
    if descriptor is not None and descriptor["kind"] == HASHING_KIND:
        dim = int(descriptor["dim"])
        weight = read_projection(model_dir, dim)
        return hashing_model_id(np.eye(dim, dtype=np.float32) if weight is None else weight)
    if not any(model_dir.glob("*.safetensors")):
        raise FileNotFoundError(
            f"{model_dir} holds neither {MODEL_DESCRIPTOR} nor *.safetensors weights; expected "
            "a sentence-transformers folder or a hashing model"
        )
    if descriptor is not None:  # a query tower
        return _query_tower_ids(model_dir, descriptor)[0]
    from shopaug.encoders.dense import model_id

    return model_id(model_dir)


def write_hashing_model(directory: str | Path, dim: int = DEFAULT_HASHING_DIM) -> Path:
    """Write a hashing model directory with the identity map (no weights file); return it."""
    directory = Path(directory)
    write_descriptor(directory, {"kind": HASHING_KIND, "dim": dim})
    return directory


class NamedEncoder:
    """An encoder under another ``id``; serialises ``encode`` calls (tokenizers are not
    safe to share between threads)."""

    def __init__(self, encoder: Encoder, encoder_id: str) -> None:
        self._encoder = encoder
        self._id = encoder_id
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return self._encoder.dim

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        with self._lock:
            return self._encoder.encode(texts, show_progress=show_progress)


class AdaptedEncoder:
    """The frozen item encoder of a query tower through its linear item adapter.

    ``encode`` gives ``normalise(vectors @ weight.T)`` (what ``nn.Linear(dim, dim,
    bias=False)`` followed by L2 normalisation computes), ``(len(texts), dim)``.
    """

    def __init__(self, encoder: Encoder, weight: np.ndarray) -> None:
        if weight.shape != (encoder.dim, encoder.dim):
            raise ConfigError(
                f"item adapter has shape {weight.shape}; the item model {encoder.id} needs "
                f"({encoder.dim}, {encoder.dim})"
            )
        self._encoder = encoder
        self._weight = np.ascontiguousarray(weight, dtype=np.float32)  # (dim, dim)
        self._id = item_encoder_id(encoder.id, self._weight)

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return self._encoder.dim

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        vectors = self._encoder.encode(texts, show_progress=show_progress)  # (n, dim)
        adapted = np.asarray(vectors, dtype=np.float32) @ self._weight.T  # (n, dim)
        norms = np.linalg.norm(adapted, axis=1, keepdims=True)
        return (adapted / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class Towers:
    """The two encoders of a model directory: ``query`` encodes queries, ``item`` the catalog.

    For a sentence-transformers folder and a hashing model they are one object. ``query.id``
    is the directory's :func:`model_version`; ``item.id`` names the catalog vectors (the
    same id for single-tower models).
    """

    query: Encoder
    item: Encoder

    @property
    def version(self) -> str:
        return self.query.id


def load_towers(model_dir: str | Path) -> Towers:
    """The query and item encoders of a model directory, loaded now (see :class:`Towers`).

    Raises:
        FileNotFoundError: ``model_dir`` is not a model directory.
        ConfigError: a descriptor or its weights are malformed.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    descriptor = _search_descriptor(model_dir)
    if descriptor is not None and descriptor["kind"] == QUERY_TOWER_KIND:
        return _load_query_tower(model_dir, descriptor)
    version = model_version(model_dir)
    encoder: Encoder
    if descriptor is not None:
        if (model_dir / PROJECTION_FILE).is_file():
            from shopaug.models.hashing_model import HashingProjection

            encoder = HashingProjection.load(model_dir)
        else:
            encoder = HashingEncoder(int(descriptor["dim"]))
    else:
        encoder = _dense_encoder(model_dir)
    named = NamedEncoder(encoder, version)
    return Towers(query=named, item=named)


def _load_query_tower(model_dir: Path, descriptor: dict[str, Any]) -> Towers:
    version, item_id = _query_tower_ids(model_dir, descriptor)
    item_model = _dense_encoder(item_model_path(model_dir, str(descriptor["item_model"])))
    adapter = read_item_adapter(model_dir)
    item: Encoder = item_model if adapter is None else AdaptedEncoder(item_model, adapter)
    query = _dense_encoder(model_dir)
    if query.dim != item.dim:
        raise ConfigError(
            f"{model_dir}: the query encoder gives {query.dim}-d vectors, the item model "
            f"{descriptor['item_model']!r} {item.dim}-d ones; expected the same size"
        )
    return Towers(query=NamedEncoder(query, version), item=NamedEncoder(item, item_id))


def _dense_encoder(path: str | Path) -> Encoder:
    """A sentence-transformers encoder of ``path`` (``"minilm"`` or a folder), loaded now."""
    from shopaug.encoders.dense import SentenceTransformerEncoder

    dense = SentenceTransformerEncoder(path)
    _ = dense.dim  # load the weights now, not in the first request
    return dense


def load_encoder(model_dir: str | Path) -> Encoder:
    """The query :class:`~shopaug.encoders.base.Encoder` of a model directory, loaded now.

    Its ``id`` is :func:`model_version`, so the embedding cache is shared by copies of a model.
    For a single-tower model it encodes the catalog too; a query tower's catalog side is
    :func:`load_item_encoder` (or :func:`load_towers` for both).

    Raises:
        FileNotFoundError: ``model_dir`` is not a model directory.
        ConfigError: a descriptor is malformed.
    """
    return load_towers(model_dir).query


def load_item_encoder(model_dir: str | Path) -> Encoder:
    """The encoder of the catalog of a model directory, loaded now (see :class:`Towers`)."""
    return load_towers(model_dir).item


def load_trainable(model_dir: str | Path) -> Any:
    """A trainable copy of the model in ``model_dir`` for :func:`shopaug.train.fit`.

    A hashing model becomes a :class:`HashingProjection`, a query tower a
    :class:`~shopaug.models.query_tower.QueryTowerModel` (its query encoder and item adapter
    train, the item model stays frozen), a sentence-transformers folder a
    :class:`shopaug.models.BiEncoder`; each ``save`` s a directory of the same kind.
    """
    model_dir = Path(model_dir)
    descriptor = _search_descriptor(model_dir)
    if descriptor is not None and descriptor["kind"] == QUERY_TOWER_KIND:
        from shopaug.models.query_tower import QueryTowerModel

        item_model = str(descriptor["item_model"])
        if item_model != "minilm" and not Path(item_model).is_absolute():
            # the challenger is saved elsewhere, where a relative path names another folder
            raise ConfigError(
                f"{model_dir / MODEL_DESCRIPTOR}: item_model {item_model!r} is a relative "
                "path; retraining a query tower needs 'minilm' or an absolute path"
            )
        item_model_path(model_dir, item_model)  # exists, or a ConfigError naming the file
        return QueryTowerModel.load(model_dir)
    if descriptor is not None:
        from shopaug.models.hashing_model import HashingProjection

        return HashingProjection.load(model_dir)
    from shopaug.models import BiEncoder

    return BiEncoder(model_dir)
