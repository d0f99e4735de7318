"""A static-embedding encoder distilled from a sentence-transformers model (model2vec).

Why: a query vector from a static model is a weighted mean of token vectors, so encoding costs
microseconds instead of a transformer's milliseconds: the cheapest first stage there is.

How: :func:`distill_static` runs ``model2vec.distill`` on the model (every token of the
vocabulary through the transformer once, a PCA to ``pca_dims``, Zipf weighting) and saves the
result in the model's export folder (``static-<dims>`` in
:func:`shopaug.encoders.exports.export_dir`), with ``export.json`` naming the model id it came
from. The static vectors live in their own space, so the catalog must be encoded by the same
:class:`StaticEncoder`; its ``id`` (``static@<sha256 prefix of its weights>``) keys their
cache entries.

Distilling MiniLM takes minutes on two cores (30k tokens through the model), once per model.
The ``[fast]`` extra installs model2vec; distilling needs torch and transformers (``[train]``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from shopaug.encoders.dense import DEFAULT_MODEL, model_fingerprint, model_id
from shopaug.encoders.exports import (
    ExportedEncoder,
    export_dir,
    export_is_current,
    resolve_model_path,
    write_export_record,
)
from shopaug.errors import ConfigError, require

logger = logging.getLogger(__name__)

#: PCA dimensions of the distilled vectors by default (model2vec's default).
DEFAULT_PCA_DIMS = 256


def distill_static(model: str | Path, *, pca_dims: int = DEFAULT_PCA_DIMS) -> Path:
    """The folder of the static model distilled from ``model``, distilled if missing.

    Args:
        model: ``"minilm"`` or a sentence-transformers folder.
        pca_dims: dimensions kept by the PCA (at most the model's own).

    Raises:
        ConfigError: ``pca_dims`` is not positive.
        MissingExtraError: model2vec (``[fast]``) is missing.
    """
    if pca_dims < 1:
        raise ConfigError(f"pca_dims is {pca_dims}; expected a positive number")
    path = resolve_model_path(model)
    source_id = model_id(path)
    folder = export_dir(model) / f"static-{pca_dims}"
    if export_is_current(folder, "model.safetensors", source_id):
        return folder
    distill = require("model2vec.distill", "fast")
    logger.info("distilling a static model from %s (%d dims) into %s", path, pca_dims, folder)
    static = distill.distill(model_name=str(path), pca_dims=pca_dims, device="cpu")
    folder.mkdir(parents=True, exist_ok=True)
    static.save_pretrained(str(folder))
    write_export_record(folder, model_id=source_id, pca_dims=pca_dims)
    return folder


class StaticEncoder(ExportedEncoder):
    """Static token embeddings distilled from a model, behind :class:`Encoder`.

    Args:
        model: ``"minilm"`` or a sentence-transformers folder to distil from, or ``static``:
            a folder that already holds a model2vec model.
        pca_dims: dimensions of the distilled vectors.
        static: a model2vec folder to load instead of distilling ``model``.

    Its ``id`` is ``static@<sha256 prefix of the static weights>``.

    Example:
        >>> encoder = StaticEncoder("minilm")  # doctest: +SKIP
        >>> encoder.encode(["blue velvet sofa"]).shape  # doctest: +SKIP
        (1, 256)
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        *,
        pca_dims: int = DEFAULT_PCA_DIMS,
        static: str | Path | None = None,
    ) -> None:
        model2vec = require("model2vec", "fast")
        if static is None:
            static = distill_static(model, pca_dims=pca_dims)
        self.folder = Path(static)
        self._model: Any = model2vec.StaticModel.from_pretrained(str(self.folder))
        self._id = f"static@{model_fingerprint(self.folder)}"
        self._dim = int(self._model.dim)

    def _vectors(self, texts: list[str], show_progress: bool) -> np.ndarray:
        return np.asarray(
            self._model.encode(texts, show_progress_bar=show_progress), dtype=np.float32
        )  # (n, dim)
