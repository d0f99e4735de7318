"""What a served model directory holds, and how to encode with it or fine-tune it.

Two kinds of model directory are served and retrained online:

* a **sentence-transformers folder** (``model.safetensors``, tokenizer, config), as ``shopaug
  run`` and :meth:`shopaug.models.BiEncoder.save` write it;
* a **hashing model**: a folder with the descriptor ``shopaug-model.json``::

      {"kind": "hashing", "dim": 256}

  and optionally ``projection.safetensors``, a ``(dim, dim)`` linear map applied to the
  :class:`~shopaug.encoders.base.HashingEncoder` features before L2 normalisation. Without the
  file the map is the identity, so the model is exactly the hashing encoder. It needs no
  download and trains in milliseconds, which is what tests and demos of the online loop use.

The model **version** is the one id of its weights (:func:`model_version`): for a
sentence-transformers folder :func:`shopaug.encoders.dense.model_id` (``st@<sha256 prefix of
the safetensors>``, what the dense encoder and the bi-encoder report too), for a hashing model
:func:`hashing_model_id` of its map (what :class:`~shopaug.models.hashing_model.HashingProjection`
reports). A copy of a model under another name keeps its version and its cached embeddings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shopaug.encoders.base import Encoder, HashingEncoder
from shopaug.errors import ConfigError

logger = logging.getLogger(__name__)

#: Descriptor file of a hashing model directory.
MODEL_DESCRIPTOR = "shopaug-model.json"
#: Weights of the optional linear map of a hashing model.
PROJECTION_FILE = "projection.safetensors"
HASHING_KIND = "hashing"
DEFAULT_HASHING_DIM = 256


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

    Raises:
        ConfigError: the descriptor is not a JSON object with a known ``kind`` and a positive
            integer ``dim``.
    """
    path = Path(model_dir) / MODEL_DESCRIPTOR
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(payload, dict) or payload.get("kind") != HASHING_KIND:
        raise ConfigError(f"{path}: field 'kind' must be {HASHING_KIND!r}, got {payload!r}")
    dim = payload.setdefault("dim", DEFAULT_HASHING_DIM)
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ConfigError(f"{path}: field 'dim' must be a positive integer, got {dim!r}")
    return payload


def is_hashing_model(model_dir: Path) -> bool:
    """True when ``model_dir`` holds a hashing-model descriptor."""
    return read_descriptor(model_dir) is not None


def model_version(model_dir: str | Path) -> str:
    """The version of a model directory: the one id of its weights (see the module docstring).

    Raises:
        FileNotFoundError: the directory holds neither a descriptor nor safetensors weights.
        ConfigError: a hashing model's descriptor or weights are malformed.
    """
    model_dir = Path(model_dir)
    descriptor = read_descriptor(model_dir)
    if descriptor is not None:
        dim = int(descriptor["dim"])
        weight = read_projection(model_dir, dim)
        return hashing_model_id(np.eye(dim, dtype=np.float32) if weight is None else weight)
    if not any(model_dir.glob("*.safetensors")):
        raise FileNotFoundError(
            f"{model_dir} holds neither {MODEL_DESCRIPTOR} nor *.safetensors weights; expected "
            "a sentence-transformers folder or a hashing model"
        )
    from shopaug.encoders.dense import model_id

    return model_id(model_dir)


def write_hashing_model(directory: str | Path, dim: int = DEFAULT_HASHING_DIM) -> Path:
    """Write a hashing model directory with the identity map (no weights file); return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"kind": HASHING_KIND, "dim": dim}
    (directory / MODEL_DESCRIPTOR).write_text(json.dumps(payload) + "\n", encoding="utf-8")
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


def load_encoder(model_dir: str | Path) -> Encoder:
    """An :class:`~shopaug.encoders.base.Encoder` for a model directory, loaded now.

    Its ``id`` is :func:`model_version`, so the embedding cache is shared by copies of a model.

    Raises:
        FileNotFoundError: ``model_dir`` is not a model directory.
        ConfigError: a descriptor is malformed.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    version = model_version(model_dir)
    descriptor = read_descriptor(model_dir)
    encoder: Encoder
    if descriptor is not None:
        if (model_dir / PROJECTION_FILE).is_file():
            from shopaug.models.hashing_model import HashingProjection

            encoder = HashingProjection.load(model_dir)
        else:
            encoder = HashingEncoder(int(descriptor["dim"]))
    else:
        from shopaug.encoders.dense import SentenceTransformerEncoder

        dense = SentenceTransformerEncoder(model_dir)
        _ = dense.dim  # load the weights now, not in the first request
        encoder = dense
    return NamedEncoder(encoder, version)


def load_trainable(model_dir: str | Path) -> Any:
    """A trainable copy of the model in ``model_dir`` for :func:`shopaug.train.fit`.

    A hashing model becomes a :class:`HashingProjection`, a sentence-transformers folder a
    :class:`shopaug.models.BiEncoder`; both ``save`` a directory of the same kind.
    """
    model_dir = Path(model_dir)
    if read_descriptor(model_dir) is not None:
        from shopaug.models.hashing_model import HashingProjection

        return HashingProjection.load(model_dir)
    from shopaug.models import BiEncoder

    return BiEncoder(model_dir)
