"""Where derived forms of a model (ONNX graphs, distilled static models) are cached.

Exports sit beside the model they come from (``<model>/shopaug-export/``), so a promoted copy
of a model directory carries them; the packaged MiniLM (in site-packages) and folders that
cannot be written keep theirs under ``$SHOPAUG_CACHE_DIR/exports/<model id>/``. Each export
folder holds ``export.json`` naming the model id it was made from: a model whose weights
changed is exported again, an unchanged one never is. The folder is not part of the model's
id (:func:`shopaug.encoders.dense.model_id` hashes the top-level weights only).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shopaug.encoders.base import normalize_rows
from shopaug.encoders.cache import default_cache_dir
from shopaug.encoders.dense import DEFAULT_MODEL, minilm_path, model_id

#: Folder beside a model directory that holds its exports.
EXPORT_FOLDER = "shopaug-export"
#: The record of what an export was made from.
EXPORT_RECORD = "export.json"


def resolve_model_path(model: str | Path) -> Path:
    """``"minilm"`` -> the packaged MiniLM folder; anything else as a path."""
    return minilm_path() if str(model) == DEFAULT_MODEL else Path(model)


def export_dir(model: str | Path) -> Path:
    """Where the exports of ``model`` (a sentence-transformers folder or ``"minilm"``) live.

    Beside the model (``<model>/shopaug-export``) when the folder is the user's and writable;
    in the cache (``$SHOPAUG_CACHE_DIR/exports/<model id>``) for the packaged MiniLM, which
    sits in site-packages, and for read-only folders.
    """
    path = resolve_model_path(model)
    packaged = str(model) == DEFAULT_MODEL or path.resolve() == minilm_path().resolve()
    if not packaged and os.access(path, os.W_OK):
        return path / EXPORT_FOLDER
    return default_cache_dir() / "exports" / model_id(path).replace("@", "-").replace(":", "-")


def read_export_record(folder: Path) -> dict[str, Any]:
    """The parsed ``export.json`` of ``folder`` ({} when absent or unreadable)."""
    try:
        record = json.loads((folder / EXPORT_RECORD).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def export_is_current(folder: Path, artefact: str, source_id: str) -> bool:
    """Whether ``folder/artefact`` exists and was made from the model ``source_id``."""
    return (folder / artefact).is_file() and read_export_record(folder).get("model_id") == source_id


def write_export_record(folder: Path, **fields: Any) -> None:
    """Merge ``fields`` into ``folder/export.json`` (written atomically)."""
    record = read_export_record(folder) | fields
    tmp = folder / f".{EXPORT_RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(folder / EXPORT_RECORD)


class ExportedEncoder:
    """What an encoder run from an export (ONNX graph, static model) shares: its ``id`` and
    ``dim``, and ``encode``, which gives ``(0, dim)`` for no texts and L2-normalised float32
    rows otherwise. Subclasses set ``_id`` and ``_dim`` and compute raw vectors in
    :meth:`_vectors`."""

    _id: str
    _dim: int

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalize_rows(self._vectors(list(texts), show_progress))

    def _vectors(self, texts: list[str], show_progress: bool) -> np.ndarray:
        """Raw vectors ``(len(texts), dim)`` of at least one text."""
        raise NotImplementedError
