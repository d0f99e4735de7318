"""Nearest-neighbour search (FAISS exact inner product, numpy fallback)."""

from shopaug.index.vector import VectorIndex

__all__ = ["VectorIndex"]
