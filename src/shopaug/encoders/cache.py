"""An embedding cache keyed by the hash of (encoder id, text): nothing is encoded twice.

Long lists of texts (a catalog: :data:`MATRIX_MIN_TEXTS` or more) are also kept as one matrix,
a ``.npy`` file keyed by the hash of (encoder id, every text in order) in the cache's
``matrices/`` folder: the next request for the same catalog reads one file instead of looking
up every text, which is what makes warm retrieval and mining cheap. The files can be deleted at
any time; the per-text entries still hold every vector.

:func:`build_encoder` is the one place that puts an encoder (or a model named by a string)
behind the cache file ``<cache_dir>/embeddings.sqlite`` (:func:`cache_path`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shopaug.encoders.base import Encoder, HashingEncoder

logger = logging.getLogger(__name__)

#: Lists of at least this many texts are cached as one matrix as well (see the docstring).
MATRIX_MIN_TEXTS = 1024
#: The SQLite file of the cache inside its folder.
CACHE_FILE = "embeddings.sqlite"


def default_cache_dir() -> Path:
    """``$SHOPAUG_CACHE_DIR``, else ``~/.cache/shopaug``."""
    return Path(os.environ.get("SHOPAUG_CACHE_DIR", Path.home() / ".cache" / "shopaug"))


def cache_path(cache_dir: str | Path | None = None) -> Path:
    """The cache file of ``cache_dir`` (default :func:`default_cache_dir`)."""
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / CACHE_FILE


def content_key(encoder_id: str, text: str) -> bytes:
    return hashlib.sha256(f"{encoder_id}\x00{text}".encode()).digest()


def list_key(encoder_id: str, texts: Sequence[str]) -> str:
    """A hex key of (encoder id, ``texts`` in order); the lengths keep the join unambiguous."""
    digest = hashlib.sha256(f"{encoder_id}\x00".encode())
    digest.update(np.array([len(text) for text in texts], dtype=np.int64).tobytes())
    digest.update("\x00".join(texts).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


class EmbeddingCache:
    """Vectors stored in SQLite by content key, with an in-process memory layer in front.

    Safe to share between processes (SQLite locks); a lost cache only costs time, never
    correctness. ``memory=False`` reads every lookup from disk (benchmarks of a new process).
    """

    def __init__(self, path: str | Path | None = None, *, memory: bool = True) -> None:
        self._memory: dict[bytes, np.ndarray] | None = {} if memory else None
        self.path = Path(path) if path is not None else cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (key BLOB PRIMARY KEY, vector BLOB NOT NULL)"
        )
        self._connection.commit()

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        if self._memory is not None:
            found = {key: self._memory[key] for key in keys if key in self._memory}
            keys = [key for key in keys if key not in found]
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = self._connection.execute(
                    f"SELECT key, vector FROM embeddings WHERE key IN ({marks})", chunk
                ).fetchall()
                for key, blob in rows:
                    found[bytes(key)] = np.frombuffer(blob, dtype=np.float32)
        if self._memory is not None:
            self._memory.update(found)
        return found

    def put_many(self, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        if self._memory is not None:
            self._memory.update(items)
        with self._lock:
            self._connection.executemany(
                "INSERT OR REPLACE INTO embeddings (key, vector) VALUES (?, ?)",
                [(key, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for key, v in items],
            )
            self._connection.commit()

    def matrix_path(self, key: str) -> Path:
        return self.path.parent / "matrices" / f"{key}.npy"

    def get_matrix(self, key: str, rows: int) -> np.ndarray | None:
        """The float32 matrix of ``rows`` rows stored under ``key``; None when there is none
        (or when the file cannot be read: a lost or broken file only costs time)."""
        path = self.matrix_path(key)
        if not path.is_file():
            return None
        try:
            matrix = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            logger.warning("embedding cache: ignoring unreadable %s (%s)", path, error)
            return None
        if matrix.ndim != 2 or len(matrix) != rows or matrix.dtype != np.float32:
            logger.warning("embedding cache: ignoring %s of shape %s", path, matrix.shape)
            return None
        return matrix

    def put_matrix(self, key: str, matrix: np.ndarray) -> None:
        """Store ``matrix`` under ``key`` (written to a temporary file, then renamed)."""
        path = self.matrix_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{uuid.uuid4().hex}.tmp.npy")
        np.save(tmp, np.ascontiguousarray(matrix, dtype=np.float32), allow_pickle=False)
        tmp.replace(path)

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._connection.close()


class CachedEncoder:
    """Wraps an :class:`Encoder`: looks texts up in the cache, encodes only the missing ones
    (each distinct text once), stores them, and returns vectors in input order."""

    def __init__(self, encoder: Encoder, cache: EmbeddingCache) -> None:
        self.encoder = encoder
        self.cache = cache
        self.hits = 0
        self.misses = 0

    @property
    def id(self) -> str:
        return self.encoder.id

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        if len(texts) < MATRIX_MIN_TEXTS:
            return self._encode_each(texts, show_progress)
        key = list_key(self.encoder.id, texts)
        matrix = self.cache.get_matrix(key, len(texts))
        if matrix is None:
            matrix = self._encode_each(texts, show_progress)
            self.cache.put_matrix(key, matrix)
        else:
            self.hits += len(texts)
        return matrix

    def _encode_each(self, texts: Sequence[str], show_progress: bool) -> np.ndarray:
        """Look every text up, encode the missing ones, store them."""
        encoder_id = self.encoder.id
        keys = [content_key(encoder_id, text) for text in texts]
        found = self.cache.get_many(list(dict.fromkeys(keys)))
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts):
            if key not in found and key not in missing:
                missing[key] = text
        self.hits += len(texts) - sum(1 for key in keys if key in missing)
        self.misses += len(missing)
        if missing:
            logger.info("encoding %d texts (%d from cache)", len(missing), len(found))
            vectors = self.encoder.encode(list(missing.values()), show_progress=show_progress)
            fresh = dict(zip(missing.keys(), vectors))
            self.cache.put_many(list(fresh.items()))
            found.update(fresh)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[key] for key in keys]).astype(np.float32, copy=False)


def build_encoder(
    model: str | Path | Encoder, cache_dir: str | Path | None = None
) -> CachedEncoder:
    """``model`` behind the embedding cache of ``cache_dir`` (default :func:`default_cache_dir`).

    Args:
        model: An :class:`~shopaug.encoders.base.Encoder`, ``"hashing"`` (the
            :class:`~shopaug.encoders.base.HashingEncoder`, no download: tests), or a
            sentence-transformers model (``"minilm"`` or a folder).
        cache_dir: The folder of ``embeddings.sqlite`` and ``matrices/``.

    Example:
        >>> import tempfile
        >>> encoder = build_encoder("hashing", tempfile.mkdtemp())
        >>> encoder.encode(["red shoe"]).shape, encoder.cache.path.name
        ((1, 512), 'embeddings.sqlite')
    """
    encoder: Encoder
    if isinstance(model, str | Path):
        if str(model) == "hashing":
            encoder = HashingEncoder()
        else:
            from shopaug.encoders.dense import SentenceTransformerEncoder

            encoder = SentenceTransformerEncoder(model)
    else:
        encoder = model
    return CachedEncoder(encoder, EmbeddingCache(cache_path(cache_dir)))
