"""The real search backend: a retriever over the run's catalog, plus a query cache and batcher.

:func:`make_catalog_loader` (what ``shopaug serve`` uses) and :func:`load_catalog_backend` are
:data:`~shopaug.serve.backend.BackendLoader` s. A loader reads the run's ``config.yaml``
(:class:`~shopaug.retrieval.catalog.CatalogSource`), loads the catalog once, and for every
model directory it is given loads the model's two encoders and encodes the catalog with the
*item* encoder through the embedding cache
(:func:`~shopaug.retrieval.catalog.load_model_catalog`, keyed by the vectors' one id, so a
promoted copy of a model costs no re-encoding) into a
:class:`~shopaug.retrieval.ranking.CatalogRanker`, which ranks it. Queries are encoded by the
*query* encoder: for a query tower (:mod:`shopaug.models.model_dir`) the fine-tuned query
encoder against the frozen item model's vectors, for other models the same encoder.

* ``search`` encodes the query (a bounded in-memory LRU cache keeps recent query vectors; new
  queries that arrive together are encoded in one batch) and ranks the whole catalog by
  cosine similarity. The one filter is ``category``: a product
  matches when any level of its category path equals the value, case-insensitively.
* When the model directory holds ``fusion.json``
  (:func:`shopaug.retrieval.fusion.read_fusion`), ``search`` ranks as the run evaluated the
  fused system: the top ``depth`` (200) of the dense ranking and of BM25 over the same catalog
  texts, both among the products the filter allows, fused by
  :meth:`~shopaug.retrieval.fusion.FusionSpec.fuse` (convex or RRF), then cut to ``k``.
  :attr:`CatalogBackend.ranking` (``GET /model``) says which ranking is in use.
* :class:`~shopaug.serve.runtime.ServingOptions` choose the query encoder's runtime (torch,
  ONNX fp32/int8, a distilled static model) and, for large catalogs, an ANN index that answers
  unfiltered searches (filtered ones are ranked exactly among the allowed rows).
* ``recommend`` is content-based: the mean of the history items' vectors, renormalised, ranks
  the catalog and the history is left out. Items without any interaction are reachable.
* A model directory of a recommendation run (``task: recommend``, a two-tower recommender with
  its titles and customer histories) is loaded as a
  :class:`~shopaug.serve.recommender_backend.RecommenderBackend` instead: it carries its own
  catalog, so the run's data set is not loaded.

A :class:`CatalogBackend` never changes after it is built; the query cache is the only shared
mutable state and sits behind a lock, so any number of request threads may use it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from shopaug.data import Dataset
from shopaug.data.records import Product
from shopaug.encoders.base import Encoder
from shopaug.index.vector import NearestNeighbours
from shopaug.models.model_dir import model_version
from shopaug.retrieval.catalog import CatalogSource, RunCatalog, find_run_dir
from shopaug.retrieval.fusion import FusionSpec, read_fusion
from shopaug.retrieval.ranking import CatalogRanker
from shopaug.retrieval.reranking import FEATURES_ENCODER_DIR, RERANKER_DIR, FeatureReranker
from shopaug.retrieval.retrievers import BM25Retriever
from shopaug.serve.backend import (
    BackendLoader,
    Hit,
    SearchBackend,
    UnknownCustomerError,
    UnknownProductError,
    UnsupportedFilterError,
)
from shopaug.serve.metrics import timed_stage
from shopaug.serve.recommender_backend import is_recommender_dir, load_recommender_backend
from shopaug.serve.runtime import (
    ServedModel,
    ServingOptions,
    build_catalog_index,
    load_served_model,
)

logger = logging.getLogger(__name__)

#: Filter fields :meth:`CatalogBackend.search` understands.
FILTER_FIELDS = ("category",)
#: Query vectors kept by default.
DEFAULT_QUERY_CACHE_SIZE = 4096
#: What :attr:`CatalogBackend.ranking` says of a model without ``fusion.json``.
DENSE_RANKING = "dense"
__all__ = [
    "CatalogBackend",
    "CatalogLoader",
    "CatalogSource",
    "QueryBatcher",
    "QueryEncoding",
    "QueryVectorCache",
    "find_run_dir",
    "load_catalog_backend",
    "make_catalog_loader",
]


class QueryVectorCache:
    """A bounded, thread-safe LRU map from query text to its (read-only) vector."""

    def __init__(self, max_size: int) -> None:
        if max_size < 0:
            raise ValueError(f"query cache size is {max_size}; expected 0 or more")
        self.max_size = max_size
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, query: str) -> np.ndarray | None:
        with self._lock:
            vector = self._entries.get(query)
            if vector is None:
                self.misses += 1
                return None
            self._entries.move_to_end(query)
            self.hits += 1
            return vector

    def put(self, query: str, vector: np.ndarray) -> None:
        if self.max_size == 0:
            return
        vector.setflags(write=False)
        with self._lock:
            self._entries[query] = vector
            self._entries.move_to_end(query)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class QueryBatcher:
    """Encodes query texts for many request threads, one batch at a time.

    A thread that needs a vector while another batch is being encoded waits; when that batch
    is done, one waiting thread encodes every text queued meanwhile (up to ``max_batch``) in
    one call, so the model runs once for a burst of new queries instead of once per query.
    Several requests for the same new text share one encoding.
    """

    def __init__(self, encoder: Encoder, max_batch: int = 32) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch is {max_batch}; expected 1 or more")
        self._encoder = encoder
        self.max_batch = max_batch
        self._condition = threading.Condition()
        self._pending: dict[str, Future[np.ndarray]] = {}
        self._busy = False
        self.batches = 0

    def encode(self, text: str) -> np.ndarray:
        """The vector ``(dim,)`` of ``text``."""
        with self._condition:
            future = self._pending.get(text)
            if future is None:
                future = Future()
                self._pending[text] = future
            while not future.done():
                if not self._busy:
                    self._busy = True
                    others = [t for t in self._pending if t != text][: self.max_batch - 1]
                    texts = [text, *others]
                    futures = [self._pending.pop(t) for t in texts]
                    break
                self._condition.wait()
            else:
                return future.result()
        try:
            vectors = self._encoder.encode(texts)
        except BaseException as error:
            for waiting in futures:
                waiting.set_exception(error)
        else:
            for waiting, vector in zip(futures, vectors):
                waiting.set_result(np.asarray(vector, dtype=np.float32))
        finally:
            with self._condition:
                self._busy = False
                self.batches += 1
                self._condition.notify_all()
        return future.result()


class QueryEncoding:
    """The query vectors of one encoder: a :class:`QueryVectorCache` in front of a
    :class:`QueryBatcher`.

    Args:
        encoder: encodes query texts.
        cache_size: query vectors kept (0 disables the cache).
    """

    def __init__(self, encoder: Encoder, cache_size: int) -> None:
        self.encoder = encoder
        self.cache = QueryVectorCache(cache_size)
        self.batcher = QueryBatcher(encoder)

    def vector(self, query: str) -> np.ndarray:
        """The query's embedding ``(dim,)``, from the LRU cache when seen recently."""
        cached = self.cache.get(query)
        if cached is not None:
            return cached
        vector = self.batcher.encode(query)
        self.cache.put(query, vector)
        return vector


class CatalogBackend:
    """Dense search and content-based recommendations over a catalog (see module docstring).

    Args:
        version: the model version shown in responses.
        products: the catalog, in the row order of ``item_vectors``.
        item_vectors: L2-normalised item embeddings ``(len(products), dim)``.
        query_encoder: encodes query texts into the same space.
        query_cache_size: query vectors kept (0 disables the cache).
        fusion: fuse the dense ranking with ``bm25`` this way (None: dense only).
        bm25: BM25 over the catalog texts, rows in the order of ``products`` (needed with
            ``fusion``).
        nearest: an (approximate) index over ``item_vectors`` for unfiltered searches; None:
            exact search.
        reranker: reorders the top ``reranker.top_k`` of every search (``model/reranker/``,
            :mod:`shopaug.retrieval.reranking`); None: no reranking. Its features read the
            request's BM25 scores when its BM25 index is ``bm25``'s (as
            :class:`CatalogLoader` builds it), and encode the query with its own
            ``query_encoder`` (cached like the first stage's) only when it has one.
    """

    def __init__(
        self,
        version: str,
        products: Sequence[Product],
        item_vectors: np.ndarray,
        query_encoder: Encoder,
        *,
        query_cache_size: int = DEFAULT_QUERY_CACHE_SIZE,
        fusion: FusionSpec | None = None,
        bm25: BM25Retriever | None = None,
        nearest: NearestNeighbours | None = None,
        reranker: FeatureReranker | None = None,
    ) -> None:
        if item_vectors.shape[0] != len(products):
            raise ValueError(
                f"{item_vectors.shape[0]} item vectors for {len(products)} products; "
                "expected one per product"
            )
        if fusion is not None and bm25 is None:
            raise ValueError("a fusion needs the BM25 index of the catalog; give bm25")
        self.fusion = fusion
        self.reranker = reranker
        self.version = version
        self._products = tuple(products)
        self._row = {product.id: row for row, product in enumerate(self._products)}
        ids = [product.id for product in self._products]
        self._ranker = CatalogRanker(item_vectors, ids)
        # rank of each row's product id: fused scores that tie are ordered by product id
        self._id_rank = np.empty(len(ids), dtype=np.int64)
        self._id_rank[np.argsort(np.array(ids, dtype=object), kind="stable")] = np.arange(len(ids))
        self._nearest = nearest
        self._encoder = query_encoder
        self._query = QueryEncoding(query_encoder, query_cache_size)
        self._batcher = self._query.batcher
        self.query_cache = self._query.cache
        # the one BM25 index scored per request (for the fusion and the reranker's features)
        features_bm25 = None if reranker is None else reranker.features.bm25_index
        self._bm25_index = bm25.index if bm25 is not None else features_bm25
        self._bm25_shared = features_bm25 is not None and features_bm25 is self._bm25_index
        self._features_encoding = None
        if reranker is not None and reranker.query_encoder is not None:
            self._features_encoding = QueryEncoding(reranker.query_encoder, query_cache_size)
        # lower-cased category levels of each product, for the category filter
        self._categories = tuple(
            frozenset(level.strip().lower() for level in product.category)
            for product in self._products
        )

    @property
    def size(self) -> int:
        """Number of products."""
        return len(self._products)

    @property
    def item_vectors(self) -> np.ndarray:
        """The catalog's vectors ``(size, dim)`` (read-only), under the model's item encoder."""
        return self._ranker.item_vectors

    @property
    def index_kind(self) -> str:
        """``exact``, or the ANN index of unfiltered searches (``hnsw``, ``ivf-pq``)."""
        return "exact" if self._nearest is None else str(getattr(self._nearest, "kind", "ann"))

    @property
    def ranking(self) -> str:
        """How ``search`` ranks: ``dense`` or the fusion (``dense + bm25 (rrf)``, ...)."""
        ranking = DENSE_RANKING if self.fusion is None else self.fusion.describe()
        if self.reranker is not None:
            ranking += f", top {self.reranker.top_k} reranked (lambdamart)"
        return ranking

    def has_product(self, product_id: str) -> bool:
        return product_id in self._row

    def query_vector(self, query: str) -> np.ndarray:
        """The query's embedding ``(dim,)``, from the LRU cache when seen recently."""
        return self._query.vector(query)

    def search(self, query: str, k: int, filters: Mapping[str, str] | None = None) -> list[Hit]:
        """The top ``k`` products for ``query``, best first (see module docstring).

        Each stage runs once per request and is timed (:func:`~shopaug.serve.metrics.
        timed_stage`): the query is encoded once (the reranker's features reuse the vector
        when their encoder is the first stage's), BM25 scores the catalog once (the fusion
        and the reranker's features both read those scores), the fusion and the features are
        array operations over catalog rows, and the reranker predicts the list in one call.

        Raises:
            UnsupportedFilterError: a filter field other than ``category``.
        """
        allowed = self._filter_rows(filters)
        with timed_stage("encode"):
            vector = self.query_vector(query)
        bm25_scores = None
        if self._bm25_index is not None:
            with timed_stage("bm25"):
                bm25_scores = self._bm25_index.score_all(query)
        reranker = self.reranker
        depth = k if reranker is None else max(k, reranker.top_k)
        rows, scores = self._first_stage(vector, bm25_scores, depth, allowed)
        if reranker is not None:
            rows, scores = self._rerank(reranker, query, vector, bm25_scores, rows, scores)
        products = self._products
        return [
            Hit(products[row].id, score, products[row].title)
            for row, score in zip(rows[:k].tolist(), scores[:k].tolist())
        ]

    def _first_stage(
        self,
        vector: np.ndarray,
        bm25_scores: np.ndarray | None,
        depth: int,
        allowed: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The first stage's best ``depth`` rows and scores (dense, or fused with BM25)."""
        fusion = self.fusion
        if fusion is None:
            with timed_stage("dense_search"):
                rows, scores = self._dense_search(vector, depth, allowed)
            found = rows[0] >= 0
            return rows[0][found], scores[0][found]
        assert bm25_scores is not None and self._bm25_index is not None  # checked in __init__
        with timed_stage("dense_search"):
            dense_rows, dense_scores = self._dense_search(vector, fusion.depth, allowed)
        with timed_stage("bm25"):
            bm25_rows, bm25_top = self._bm25_index.top(bm25_scores, fusion.depth, allowed)
        with timed_stage("fusion"):
            dense_found, bm25_found = dense_rows[0] >= 0, bm25_rows >= 0
            return fusion.fuse_rows(
                (dense_rows[0][dense_found], dense_scores[0][dense_found]),
                (bm25_rows[bm25_found], bm25_top[bm25_found]),
                tie_keys=self._id_rank,
                depth=depth,
            )

    def _rerank(
        self,
        reranker: FeatureReranker,
        query: str,
        vector: np.ndarray,
        bm25_scores: np.ndarray | None,
        rows: np.ndarray,
        scores: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``rows`` with their top ``reranker.top_k`` reordered by the reranker (the rest
        keep their order and first-stage scores)."""
        head = rows[: reranker.top_k]
        if head.size == 0:
            return rows, scores
        if self._features_encoding is not None:  # the features' own (base) encoder
            with timed_stage("encode"):
                vector = self._features_encoding.vector(query)
        if not self._bm25_shared:
            bm25_scores = None  # the reranker scores BM25 with its own index
        with timed_stage("features"):
            features = reranker.features_of(query, vector, head, bm25_scores=bm25_scores)
        with timed_stage("rerank"):
            order, model_scores = reranker.order(features)
        rest = slice(reranker.top_k, None)
        return (
            np.concatenate([head[order], rows[rest]]),
            np.concatenate([model_scores[order], np.asarray(scores[rest], dtype=np.float64)]),
        )

    def _dense_search(
        self, vector: np.ndarray, depth: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ANN index for unfiltered searches when there is one, else exact ranking."""
        if allowed is None and self._nearest is not None:
            return self._nearest.search(vector, depth)
        return self._ranker.search(vector, depth, allowed)

    def recommend(self, history: Sequence[str], k: int) -> list[Hit]:
        """``k`` products closest to the mean embedding of ``history``, history excluded.

        Raises:
            UnknownProductError: ids of ``history`` that are not in the catalog.
        """
        unknown = [pid for pid in dict.fromkeys(history) if pid not in self._row]
        if unknown:
            raise UnknownProductError(unknown)
        rows = sorted({self._row[pid] for pid in history})
        profile = self._ranker.item_vectors[rows].mean(axis=0)  # (dim,)
        norm = float(np.linalg.norm(profile))
        if norm > 0:
            profile = profile / norm
        found, scores = self._dense_search(profile, min(k + len(rows), self.size), None)
        excluded = set(rows)
        keep = [(r, s) for r, s in zip(found[0], scores[0]) if r >= 0 and int(r) not in excluded]
        return [self._hit(int(r), float(s)) for r, s in keep[:k]]

    def customer_history(self, customer_id: str) -> list[str]:
        """Always :class:`UnknownCustomerError`: a search model knows no customers."""
        raise UnknownCustomerError(
            customer_id,
            f"customer {customer_id!r} is unknown: the model in service is a search model, "
            "which knows no customers; send 'history' or 'session_id' instead",
        )

    def _filter_rows(self, filters: Mapping[str, str] | None) -> np.ndarray | None:
        if not filters:
            return None
        for field in filters:
            if field not in FILTER_FIELDS:
                raise UnsupportedFilterError(
                    f"filter field {field!r} is not supported; expected one of {FILTER_FIELDS}"
                )
        wanted = str(filters["category"]).strip().lower()
        return np.array(
            [row for row, levels in enumerate(self._categories) if wanted in levels],
            dtype=np.int64,
        )

    def _hit(self, row: int, score: float) -> Hit:
        product = self._products[row]
        return Hit(product.id, score, product.title)


class CatalogLoader:
    """A :data:`~shopaug.serve.backend.BackendLoader` bound to one run directory.

    The catalog is loaded on the first call and reused for every model loaded afterwards
    (reloads and promotions change the model, not the catalog).

    Args:
        run_dir: the run directory (its config.yaml names the catalog).
        cache_dir: embedding cache folder (default ``$SHOPAUG_CACHE_DIR`` or ~/.cache/shopaug).
        query_cache_size: query vectors kept per backend.
        dataset: the run's data set when the caller has it loaded already.
        options: the encoder runtime and the ANN choice (default: torch, exact below 200k).
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        cache_dir: str | Path | None = None,
        query_cache_size: int = DEFAULT_QUERY_CACHE_SIZE,
        dataset: Dataset | None = None,
        options: ServingOptions | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.options = options or ServingOptions()
        self.source = CatalogSource.from_run_dir(self.run_dir)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.query_cache_size = query_cache_size
        self._catalog: RunCatalog | None = None
        self._bm25: BM25Retriever | None = None
        self._lock = threading.Lock()
        if dataset is not None:
            self._catalog = RunCatalog.from_dataset(dataset, self.source.text_fields)

    def catalog(self) -> RunCatalog:
        """The products and their rendered texts (loaded once)."""
        with self._lock:
            if self._catalog is None:
                self._catalog = RunCatalog.from_dataset(self.source.load(), self.source.text_fields)
            return self._catalog

    def bm25(self) -> BM25Retriever:
        """BM25 over the catalog texts (built once, on the first model that fuses)."""
        catalog = self.catalog()
        with self._lock:
            if self._bm25 is None:
                self._bm25 = BM25Retriever(catalog.texts)
            return self._bm25

    def __call__(self, model_dir: Path) -> SearchBackend:
        if is_recommender_dir(model_dir):  # a recommend run's model/: its own catalog
            return load_recommender_backend(model_dir)
        catalog = self.catalog()
        fusion = read_fusion(model_dir)  # a malformed file fails before the model loads
        served = load_served_model(model_dir, catalog.texts, self.options, self.cache_dir)
        reranker = None
        if (model_dir / RERANKER_DIR).is_dir():
            reranker = self._reranker(model_dir / RERANKER_DIR, served)
        return CatalogBackend(
            served.version,
            catalog.products,
            served.item_vectors,
            served.query,
            query_cache_size=self.query_cache_size,
            fusion=fusion,
            bm25=None if fusion is None and reranker is None else self.bm25(),
            nearest=build_catalog_index(served.item_vectors, self.options),
            reranker=reranker,
        )

    def _reranker(self, folder: Path, served: ServedModel) -> FeatureReranker:
        """The reranker in ``folder`` with the loader's one BM25 index, its features over the
        first stage's vectors or, when it holds its own (base) encoder, over that encoder's,
        run by the same encoder runtime as the first stage. An ``encoder/`` that holds the
        first stage's own weights is the first stage: its vectors are reused."""
        catalog = self.catalog()
        own = folder / FEATURES_ENCODER_DIR
        bm25 = self.bm25().index
        if not own.is_dir() or model_version(own) == served.version:
            return FeatureReranker.load(
                folder, catalog.products, catalog.texts, served.item_vectors, bm25=bm25
            )
        features = load_served_model(own, catalog.texts, self.options, self.cache_dir)
        return FeatureReranker.load(
            folder,
            catalog.products,
            catalog.texts,
            features.item_vectors,
            features.query,
            bm25=bm25,
        )


def make_catalog_loader(run_dir: str | Path, **options: Any) -> BackendLoader:
    """A loader for the models of ``run_dir`` (options: those of :class:`CatalogLoader`)."""
    return CatalogLoader(run_dir, **options)


def load_catalog_backend(model_dir: Path, options: ServingOptions | None = None) -> SearchBackend:
    """Build the backend of ``model_dir``; the run's config.yaml is found above it.

    A :data:`~shopaug.serve.backend.BackendLoader` for one-off use; a service should use
    :func:`make_catalog_loader`, which loads the catalog only once. ``options``: the encoder
    runtime and the ANN choice (default: :class:`ServingOptions`' defaults, as served).
    """
    return CatalogLoader(find_run_dir(model_dir), options=options)(Path(model_dir))
