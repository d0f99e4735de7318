"""The :class:`Encoder` protocol every text encoder implements, and a fast hashing encoder."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+")


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into L2-normalised float32 vectors of shape ``(len(texts), dim)``.

    ``id`` identifies the model and its weights (it keys the embedding cache), so two encoders
    with the same ``id`` must give the same vectors.
    """

    @property
    def id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray: ...


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` ``(n, dim)`` with each row scaled to unit L2 norm (zero rows stay zero),
    as float32."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric tokens; the tokenizer of the hashing encoder and of text rules."""
    return _TOKEN.findall(text.lower())


class HashingEncoder:
    """Bag of words and character trigrams hashed into ``dim`` buckets, L2-normalised.

    No model, no torch: deterministic on every machine and thousands of texts per second. Used
    by tests and as a cheap lexical-dense baseline; it is not a language model.
    """

    def __init__(self, dim: int = 512) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self._dim = dim

    @property
    def id(self) -> str:
        return f"hashing-{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def _bucket(self, feature: str) -> int:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") % self._dim

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        vectors = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in tokenize(text):
                vectors[row, self._bucket(token)] += 1.0
                padded = f"#{token}#"
                for start in range(len(padded) - 2):
                    vectors[row, self._bucket(padded[start : start + 3])] += 0.5
        return normalize_rows(vectors)
