"""Inner-product nearest-neighbour search: exact (FAISS or numpy) and approximate (FAISS).

* :class:`VectorIndex`: exact maximum inner product, FAISS ``IndexFlatIP`` when installed, numpy
  otherwise; both score queries in chunks, so memory stays flat as the query set grows.
* :class:`AnnIndex`: approximate search for large catalogs, FAISS HNSW (``IndexHNSWFlat``: a
  graph over the full vectors, high recall, more memory than the vectors) or IVF-PQ
  (``IndexIVFPQ``: vectors clustered into ``nlist`` lists and compressed to ``pq_m`` bytes,
  a fraction of the memory, lower recall). :class:`AnnConfig` holds their knobs.
* :func:`build_index` picks one by kind; :func:`choose_index_kind` picks exact below a catalog
  size and the ANN kind above it (what the service does).

Every index has the same ``search(queries, k) -> (rows, scores)`` with ``-1`` / ``-inf`` pads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from shopaug.errors import ConfigError, require

logger = logging.getLogger(__name__)


#: Index kinds :func:`build_index` knows.
INDEX_KINDS = ("exact", "hnsw", "ivf-pq")
IndexKind = Literal["exact", "hnsw", "ivf-pq"]
AnnKind = Literal["hnsw", "ivf-pq"]
#: Catalog size from which the service uses an ANN index by default.
DEFAULT_ANN_THRESHOLD = 200_000


def _faiss():
    try:
        import faiss

        return faiss
    except ImportError:
        return None


class NearestNeighbours(Protocol):
    """What every index offers: its size and a top-``k`` inner-product search."""

    @property
    def size(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


class VectorIndex:
    """Exact maximum-inner-product search over ``vectors`` (n_items, dim), float32.

    Args:
        vectors: item embeddings (normalised for cosine similarity).
        backend: ``"auto"`` (FAISS if importable), ``"faiss"`` or ``"numpy"``.
        chunk_size: queries scored per chunk.
    """

    def __init__(
        self, vectors: np.ndarray, *, backend: str = "auto", chunk_size: int = 1024
    ) -> None:
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D (n_items, dim), got shape {vectors.shape}")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.chunk_size = chunk_size
        faiss = _faiss() if backend in ("auto", "faiss") else None
        if backend == "faiss" and faiss is None:
            raise ImportError("faiss is not installed; run: pip install 'shopaug[train]'")
        self.backend = "faiss" if faiss is not None else "numpy"
        self._index = None
        if faiss is not None:
            self._index = faiss.IndexFlatIP(self.vectors.shape[1])
            self._index.add(self.vectors)

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows and scores per query, each (n_queries, k), best first; -1 pads."""
        queries, rows, scores, k_eff = _prepare(queries, k, self.size)
        n = queries.shape[0]
        if n == 0 or k_eff == 0:
            return rows, scores
        for start in range(0, n, self.chunk_size):
            chunk = queries[start : start + self.chunk_size]
            if self._index is not None:
                found_scores, found_rows = self._index.search(chunk, k_eff)
            else:
                found_rows, found_scores = _numpy_top_k(self.vectors, chunk, k_eff)
            rows[start : start + len(chunk), :k_eff] = found_rows
            scores[start : start + len(chunk), :k_eff] = found_scores
        return rows, scores


def _prepare(
    queries: np.ndarray, k: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Queries as a contiguous float32 matrix, result arrays padded with -1 / -inf, and the
    number of results a catalog of ``size`` can give."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    rows = np.full((queries.shape[0], k), -1, dtype=np.int64)
    scores = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
    return queries, rows, scores, min(k, size)


def _numpy_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    similarity = queries @ vectors.T  # (chunk, n_items)
    if k < similarity.shape[1]:
        part = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(similarity.shape[1]), (len(queries), 1))
    part_scores = np.take_along_axis(similarity, part, axis=1)
    # Sort by score descending, ties by row ascending (as FAISS does).
    order = np.lexsort((part, -part_scores), axis=1)
    rows = np.take_along_axis(part, order, axis=1)
    return rows, np.take_along_axis(part_scores, order, axis=1)


@dataclass(frozen=True)
class AnnConfig:
    """Knobs of the approximate indexes (FAISS names in brackets).

    Attributes:
        hnsw_m: graph neighbours per node (``M``); more: better recall, more memory.
        ef_construction: candidate list while building (``efConstruction``).
        ef_search: candidate list while searching (``efSearch``); raised to ``k`` when lower.
        nlist: IVF lists; None: ``4 * sqrt(n)`` clamped to ``[1, n // 39]`` (FAISS wants 39
            training points per centroid).
        nprobe: IVF lists visited per query.
        pq_m: PQ sub-quantisers (bytes per vector, 8 bits each); must divide the dimension.
        refine: when above 0, IVF-PQ re-scores its ``refine * k`` best candidates with the
            full vectors (``IndexRefineFlat``): much better recall, the vectors' memory again.
        train_size: vectors the IVF-PQ quantisers are trained on (a seeded sample).
        seed: seed of the training sample and the k-means.
    """

    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    nlist: int | None = None
    nprobe: int = 16
    pq_m: int = 48
    refine: int = 0
    train_size: int = 100_000
    seed: int = 0


class AnnIndex:
    """Approximate maximum-inner-product search with FAISS HNSW or IVF-PQ (see module docstring).

    Args:
        vectors: item embeddings ``(n_items, dim)``, float32, L2-normalised.
        kind: ``"hnsw"`` or ``"ivf-pq"``.
        config: the index knobs.

    Raises:
        ConfigError: an unknown kind, or ``pq_m`` that does not divide the dimension.
        MissingExtraError: FAISS is not installed.
    """

    def __init__(
        self, vectors: np.ndarray, kind: AnnKind = "hnsw", config: AnnConfig | None = None
    ):
        faiss = require("faiss", "train")
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D (n_items, dim), got shape {vectors.shape}")
        self.kind = kind
        self.config = config or AnnConfig()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._size, dim = vectors.shape
        if kind == "hnsw":
            self._index = faiss.IndexHNSWFlat(dim, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self._index.hnsw.efConstruction = self.config.ef_construction
        elif kind == "ivf-pq":
            self._index = self._ivf_pq(faiss, vectors)
        else:
            raise ConfigError(f"ANN kind is {kind!r}; expected 'hnsw' or 'ivf-pq'")
        if self._size:
            self._index.add(vectors)

    def _ivf_pq(self, faiss, vectors: np.ndarray):
        n, dim = vectors.shape
        config = self.config
        if dim % config.pq_m:
            raise ConfigError(f"pq_m is {config.pq_m}; it must divide the dimension {dim}")
        nlist = config.nlist or int(np.clip(4 * np.sqrt(n), 1, max(1, n // 39)))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, config.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = config.seed
        index.pq.cp.seed = config.seed
        rng = np.random.default_rng(config.seed)
        sample = vectors[np.sort(rng.choice(n, min(n, config.train_size), replace=False))]
        if len(sample) < 256:  # PQ with 8 bits needs 256 points per sub-quantiser
            raise ConfigError(
                f"IVF-PQ needs at least 256 vectors to train its quantisers; got {len(sample)} "
                "(use exact search or HNSW for a catalog this small)"
            )
        index.train(sample)
        index.nprobe = config.nprobe
        if config.refine > 0:
            refined = faiss.IndexRefineFlat(index)
            refined.k_factor = float(config.refine)
            refined.own_fields = False  # ``index`` is kept alive by self._base below
            self._base = index
            return refined
        return index

    @property
    def size(self) -> int:
        return int(self._size)

    @property
    def memory_bytes(self) -> int:
        """Bytes of the serialised index (its vectors or codes, graph or lists)."""
        import faiss

        return int(faiss.serialize_index(self._index).nbytes)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows and scores per query, each (n_queries, k), best first; -1 pads."""
        faiss: Any = require("faiss", "train")  # its stubs lack SearchParametersHNSW

        queries, rows, scores, k_eff = _prepare(queries, k, self.size)
        n = queries.shape[0]
        if n == 0 or k_eff == 0:
            return rows, scores
        params = None
        if self.kind == "hnsw":  # per call, so concurrent requests with other k do not race
            params = faiss.SearchParametersHNSW(efSearch=max(self.config.ef_search, k_eff))
        found_scores, found_rows = self._index.search(queries, k_eff, params=params)
        found = found_rows >= 0
        rows[:, :k_eff] = np.where(found, found_rows, -1)
        scores[:, :k_eff] = np.where(found, found_scores, -np.inf)
        return rows, scores


def choose_index_kind(size: int, *, threshold: int, ann: AnnKind = "hnsw") -> IndexKind:
    """``"exact"`` for catalogs below ``threshold`` items, ``ann`` from it on.

    Raises:
        ConfigError: a negative threshold or an unknown ANN kind.
    """
    if threshold < 0:
        raise ConfigError(f"ann_threshold is {threshold}; expected 0 or more")
    if ann not in ("hnsw", "ivf-pq"):
        raise ConfigError(f"ann kind is {ann!r}; expected 'hnsw' or 'ivf-pq'")
    return "exact" if size < threshold else ann


def build_index(
    vectors: np.ndarray, kind: IndexKind = "exact", config: AnnConfig | None = None
) -> NearestNeighbours:
    """An index of ``kind`` over ``vectors`` (``exact``: :class:`VectorIndex`)."""
    if kind == "exact":
        return VectorIndex(vectors)
    if kind not in INDEX_KINDS:
        raise ConfigError(f"index kind is {kind!r}; expected one of {INDEX_KINDS}")
    return AnnIndex(vectors, kind, config)
