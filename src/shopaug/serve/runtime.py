"""How the service runs a model: the query encoder's runtime and the catalog index.

The model directory says *what* ranks (its encoders and vectors, :mod:`shopaug.models.model_dir`);
these options say *how fast*, trading a little quality for latency:

* ``encoder_runtime`` (:data:`ENCODER_RUNTIMES`):

  - ``auto`` (the default): :data:`FAST_RUNTIME` (``onnx``, fp32) for a sentence-transformers
    model or query tower when ONNX Runtime and ``onnx`` are installed (the ``serve`` extra
    brings them) and the export works, else ``torch`` (logged); a hashing model is served by
    ``torch``. :func:`resolve_runtime` decides; the export is made at the first load and
    cached beside the model (:mod:`shopaug.encoders.onnx`), so later starts only read it;
  - ``torch``: the model directory's own encoders;
  - ``onnx`` / ``onnx-int8``: the query encoder exported to ONNX Runtime in fp32 / with int8
    weights (:class:`shopaug.encoders.onnx.OnnxEncoder`). The catalog keeps the torch vectors
    of the item encoder (through the embedding cache), so only the query side changes;
  - ``static``: a static-embedding model distilled from the query encoder
    (:class:`shopaug.encoders.static.StaticEncoder`) encodes the queries *and* the catalog
    (its vectors live in their own space). Single-tower models only: a query tower's query
    encoder was trained against another model's catalog vectors.

  Runtimes other than ``torch`` need a sentence-transformers model (not a hashing model).
* ``ann_threshold`` / ``ann_kind``: catalogs of at least ``ann_threshold`` products get an
  approximate index (:class:`shopaug.index.vector.AnnIndex`, HNSW or IVF-PQ) for unfiltered
  searches; smaller ones, and every filtered search, are ranked exactly.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from shopaug.encoders.base import Encoder
from shopaug.errors import ConfigError
from shopaug.index.vector import (
    DEFAULT_ANN_THRESHOLD,
    AnnConfig,
    AnnKind,
    NearestNeighbours,
    build_index,
    choose_index_kind,
)
from shopaug.models.model_dir import HASHING_KIND, QUERY_TOWER_KIND, NamedEncoder, read_descriptor
from shopaug.retrieval.catalog import encode_catalog, load_model_catalog

logger = logging.getLogger(__name__)

EncoderRuntime = Literal["auto", "torch", "onnx", "onnx-int8", "static"]
#: Every runtime ``encoder_runtime`` may name.
ENCODER_RUNTIMES: tuple[str, ...] = get_args(EncoderRuntime)
#: What ``auto`` serves a neural model with: the fastest runtime that keeps the served
#: pipeline's NDCG@10. On the wands-subset run of full-rerank.yaml (MiniLM + BM25 fusion,
#: LambdaMART over the top 100; every judged query, in process) ONNX fp32 gives torch's
#: 0.8729 exactly, while int8 query vectors give 0.8487: the reranker's cosine features move.
FAST_RUNTIME: EncoderRuntime = "onnx"


@dataclass(frozen=True)
class ServingOptions:
    """The speed options of a served model (see the module docstring).

    Attributes:
        encoder_runtime: ``auto`` (default), ``torch``, ``onnx``, ``onnx-int8`` or ``static``.
        ann_threshold: catalogs of at least this many products get an ANN index.
        ann_kind: ``hnsw`` or ``ivf-pq``.
        onnx_threads: ONNX Runtime threads per query batch.
    """

    encoder_runtime: EncoderRuntime = "auto"
    ann_threshold: int = DEFAULT_ANN_THRESHOLD
    ann_kind: AnnKind = "hnsw"
    onnx_threads: int = 1

    def __post_init__(self) -> None:
        if self.encoder_runtime not in ENCODER_RUNTIMES:
            raise ConfigError(
                f"encoder_runtime is {self.encoder_runtime!r}; expected one of {ENCODER_RUNTIMES}"
            )
        choose_index_kind(0, threshold=self.ann_threshold, ann=self.ann_kind)  # validates both
        if self.onnx_threads < 1:
            raise ConfigError(f"onnx_threads is {self.onnx_threads}; expected 1 or more")


@dataclass(frozen=True)
class ServedModel:
    """A model as served: its version, the query encoder and the catalog's vectors."""

    version: str
    query: Encoder
    item_vectors: np.ndarray  # (n_products, dim)


def load_served_model(
    model_dir: Path,
    texts: tuple[str, ...] | list[str],
    options: ServingOptions,
    cache_dir: str | Path | None = None,
) -> ServedModel:
    """The query encoder of ``model_dir`` under ``options.encoder_runtime`` and the vectors of
    the catalog ``texts`` it ranks (through the embedding cache in ``cache_dir``).

    The version is the model directory's, whatever the runtime: it names the weights.
    ``auto`` is resolved here (:func:`resolve_runtime`); when its fast runtime cannot be
    loaded (no ONNX Runtime, an export that fails), the model is served by torch, logged.

    Raises:
        ConfigError: a runtime other than ``torch`` for a hashing model, or ``static`` for a
            query tower (the message names the model directory).
    """
    runtime = resolve_runtime(model_dir, options.encoder_runtime)
    if options.encoder_runtime == "auto" and runtime != "torch":
        try:
            fast = replace(options, encoder_runtime=runtime)
            return load_served_model(model_dir, texts, fast, cache_dir)
        except (ConfigError, ImportError, OSError, RuntimeError) as error:
            logger.warning(
                "serving %s with torch: the %s runtime could not be loaded (%s)",
                model_dir,
                runtime,
                error,
            )
            runtime = "torch"
    if runtime == "torch":
        towers, vectors = load_model_catalog(model_dir, texts, cache_dir)
        return ServedModel(towers.version, towers.query, vectors)
    descriptor = read_descriptor(model_dir)
    kind = None if descriptor is None else descriptor["kind"]
    if kind == HASHING_KIND:
        raise ConfigError(
            f"{model_dir} is a hashing model; encoder_runtime {runtime!r} needs a "
            "sentence-transformers model (use encoder_runtime 'torch')"
        )
    if runtime == "static":
        if kind == QUERY_TOWER_KIND:
            raise ConfigError(
                f"{model_dir} is a query tower; encoder_runtime 'static' serves single-tower "
                "models only (use 'onnx' or 'onnx-int8')"
            )
        from shopaug.encoders.static import StaticEncoder
        from shopaug.models.model_dir import model_version

        static = StaticEncoder(model_dir)
        logger.info("serving %s with the static model %s", model_dir, static.id)
        vectors = encode_catalog(static, texts, cache_dir)
        return ServedModel(model_version(model_dir), NamedEncoder(static, static.id), vectors)
    from shopaug.encoders.onnx import OnnxEncoder

    towers, vectors = load_model_catalog(model_dir, texts, cache_dir)
    precision = "int8" if runtime == "onnx-int8" else "fp32"
    query = OnnxEncoder(model_dir, precision=precision, threads=options.onnx_threads)
    if query.dim != vectors.shape[1]:
        raise ConfigError(
            f"{model_dir}: the ONNX query encoder gives {query.dim}-d vectors, the catalog "
            f"{vectors.shape[1]}-d ones"
        )
    logger.info("serving %s with ONNX Runtime (%s)", model_dir, precision)
    return ServedModel(towers.version, query, vectors)


def resolve_runtime(model_dir: Path, runtime: EncoderRuntime) -> EncoderRuntime:
    """The runtime that serves ``model_dir``: ``runtime`` itself, or for ``auto``
    :data:`FAST_RUNTIME` when ONNX Runtime and ``onnx`` are importable and the model has a
    neural encoder, else ``torch``."""
    if runtime != "auto":
        return runtime
    descriptor = read_descriptor(model_dir)
    if descriptor is not None and descriptor["kind"] == HASHING_KIND:
        return "torch"
    missing = [name for name in ("onnxruntime", "onnx") if importlib.util.find_spec(name) is None]
    if missing:
        logger.warning(
            "serving %s with torch: %s not installed (pip install 'shopaug[serve]' serves it "
            "with ONNX Runtime, about twice as fast)",
            model_dir,
            " and ".join(missing),
        )
        return "torch"
    return FAST_RUNTIME


def build_catalog_index(
    item_vectors: np.ndarray, options: ServingOptions, config: AnnConfig | None = None
) -> NearestNeighbours | None:
    """An ANN index over ``item_vectors`` when the catalog reaches ``options.ann_threshold``
    products; None when exact search is chosen."""
    kind = choose_index_kind(
        len(item_vectors), threshold=options.ann_threshold, ann=options.ann_kind
    )
    if kind == "exact":
        return None
    logger.info("building a %s index over %d products", kind, len(item_vectors))
    return build_index(item_vectors, kind, config)
