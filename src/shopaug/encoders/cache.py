"""An embedding cache keyed by the hash of (encoder id, text): nothing is encoded twice."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shopaug.encoders.base import Encoder

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$SHOPAUG_CACHE_DIR``, else ``~/.cache/shopaug``."""
    return Path(os.environ.get("SHOPAUG_CACHE_DIR", Path.home() / ".cache" / "shopaug"))


def content_key(encoder_id: str, text: str) -> bytes:
    return hashlib.sha256(f"{encoder_id}\x00{text}".encode()).digest()


class EmbeddingCache:
    """Vectors stored in SQLite by content key, with an in-process memory layer in front.

    Safe to share between processes (SQLite locks); a lost cache only costs time, never
    correctness. ``memory=False`` reads every lookup from disk (benchmarks of a new process).
    """

    def __init__(self, path: str | Path | None = None, *, memory: bool = True) -> None:
        self._memory: dict[bytes, np.ndarray] | None = {} if memory else None
        self.path = Path(path) if path is not None else default_cache_dir() / "embeddings.sqlite"
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
        keys = [content_key(self.encoder.id, text) for text in texts]
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
