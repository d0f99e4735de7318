"""Encoding and dense mining on Ray Data: ``map_batches`` over shards of texts or queries.

Nothing here re-implements a transform. Encoding calls the encoder that
:func:`shopaug.retrieval.retrievers.build_encoder` builds, once in each worker process (Ray
tasks reuse their worker processes, so a model loads once per worker), and the driver stores
the vectors in its embedding cache, so the unchanged :func:`shopaug.augment.pipeline.augment`
that runs next encodes nothing: its samples are those of a local run. Dense mining calls the
unchanged :func:`shopaug.augment.mining.mine_hard_negatives` on each shard of query ids, in
workers whose embedding cache is seeded with the driver's vectors.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shopaug.augment.mining import MiningConfig, MiningStats, mine_hard_negatives
from shopaug.data.records import Dataset
from shopaug.encoders.base import Encoder
from shopaug.encoders.cache import CachedEncoder, EmbeddingCache, cache_path, content_key
from shopaug.errors import ConfigError
from shopaug.retrieval.retrievers import build_encoder

logger = logging.getLogger(__name__)

_SUMMED_STATS = (
    "queries",
    "positives",
    "negatives",
    "filtered_false_negatives",
    "filtered_by_cross_encoder",
    "queries_short_of_negatives",
)


@functools.lru_cache(maxsize=2)
def _worker_encoder(model: str) -> Encoder:
    """The encoder of ``model`` in this worker process, loaded once; its cache is an empty
    folder of the worker's own (workers never share the driver's disk)."""
    return build_encoder(model, _scratch_cache_dir()).encoder


def _scratch_cache_dir() -> str:
    return tempfile.mkdtemp(prefix="shopaug-ray-")


def encode_batch(batch: dict[str, np.ndarray], *, model: str) -> dict[str, np.ndarray]:
    """A Ray Data batch ``{"row", "text"}`` -> ``{"row", "vector", "encoder"}`` (the encoder
    id, which the driver checks against its own)."""
    encoder = _worker_encoder(model)
    texts = [str(text) for text in batch["text"]]
    vectors = np.asarray(encoder.encode(texts), dtype=np.float32)  # (batch, dim)
    return {"row": batch["row"], "vector": vectors, "encoder": np.array([encoder.id] * len(texts))}


def encode_into_cache(
    encoder: CachedEncoder,
    model: str,
    texts: Sequence[str],
    *,
    shards: int,
    batch_size: int = 256,
) -> int:
    """Encode the ``texts`` that ``encoder``'s cache lacks on Ray, and store them there.

    Args:
        encoder: The driver's cached encoder (``build_encoder(model, cache_dir)``).
        model: What each worker builds (``minilm``, a folder present on every node, ``hashing``).
        texts: Texts to have in the cache (repeats are encoded once).
        shards: Blocks and worker actors.
        batch_size: Texts per ``map_batches`` call.

    Returns:
        How many texts were encoded.

    Raises:
        ConfigError: A worker's encoder has another id than the driver's (other weights).
    """
    import ray

    unique = list(dict.fromkeys(texts))
    keys = [content_key(encoder.id, text) for text in unique]
    found = encoder.cache.get_many(keys)
    missing = [(key, text) for key, text in zip(keys, unique) if key not in found]
    if not missing:
        return 0
    items = [{"row": row, "text": text} for row, (_, text) in enumerate(missing)]
    blocks = max(1, min(shards, len(items)))
    encoded = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        encode_batch,  # type: ignore[arg-type]  # Ray's stubs allow no keyword-only arguments
        fn_kwargs={"model": model},
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=blocks,
    )
    rows: list[np.ndarray] = []
    vectors: list[np.ndarray] = []
    for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
        ids = set(batch["encoder"].tolist())
        if ids != {encoder.id}:
            raise ConfigError(
                f"Ray workers encoded with {sorted(ids)}, the driver with {encoder.id!r}: every "
                f"node needs the same weights of model {model!r}"
            )
        rows.append(np.asarray(batch["row"]))
        vectors.append(np.asarray(batch["vector"]))
    order = np.argsort(np.concatenate(rows))
    stacked = np.concatenate(vectors)[order]  # (missing, dim), in the order of ``missing``
    encoder.cache.put_many([(key, vector) for (key, _), vector in zip(missing, stacked)])
    logger.info("encoded %d texts on Ray in %d shards", len(missing), blocks)
    return len(missing)


@functools.lru_cache(maxsize=2)
def _worker_mining_inputs(dataset: Any, vectors: Any) -> tuple[Dataset, str]:
    """The data set and an embedding cache folder seeded with the driver's vectors, made once
    per worker process for each pair of object references."""
    import ray

    folder = Path(_scratch_cache_dir())
    cache = EmbeddingCache(cache_path(folder))
    cache.put_many(list(ray.get(vectors).items()))
    cache.close()
    return ray.get(dataset), str(folder)


def mine_batch(
    batch: dict[str, np.ndarray], *, dataset: Any, vectors: Any, config: MiningConfig
) -> dict[str, np.ndarray]:
    """``mine_hard_negatives`` on a Ray Data batch of query ids, reading the driver's vectors
    (nothing is encoded again); one row out: the samples as Parquet bytes and the statistics
    as JSON."""
    data, cache_dir = _worker_mining_inputs(dataset, vectors)
    settings = replace(config, cache_dir=cache_dir, show_progress=False)
    frame, stats = mine_hard_negatives(data, [str(q) for q in batch["query_id"]], settings)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return {
        "samples": np.array([buffer.getvalue()], dtype=object),
        "stats": np.array([json.dumps(asdict(stats))], dtype=object),
    }


def can_shard_mining(config: MiningConfig) -> bool:
    """Whether each query's mined samples depend on that query alone, so shards of queries
    give the samples of one pass: dense retrieval (the reference score is each positive's
    exact cosine, not a place in a list whose depth follows the batch), ``top`` sampling (no
    random stream shared across queries) and every label visible (no seeded draw over the
    whole query set)."""
    return config.method == "dense" and config.sampling == "top" and config.label_fraction >= 1


def mine_dense_on_ray(
    dataset: Dataset,
    query_ids: Sequence[str],
    config: MiningConfig,
    *,
    encoder: CachedEncoder,
    shards: int,
) -> tuple[pd.DataFrame, MiningStats]:
    """Dense hard negatives of ``query_ids`` mined on Ray, a shard of query ids per block; the
    same samples as :func:`mine_hard_negatives` in one process.

    The catalog and query vectors must be in ``encoder``'s cache (see
    :func:`encode_into_cache`); they are shipped to the workers once.

    Raises:
        ConfigError: ``config`` is not shardable (see :func:`can_shard_mining`).
    """
    import ray

    if not can_shard_mining(config):
        raise ConfigError(
            "mining config: only dense mining with sampling 'top' and label_fraction 1 is "
            f"sharded on Ray (got {config.method}, {config.sampling}, {config.label_fraction})"
        )
    texts = dataset.product_texts(config.text_fields) + [
        dataset.query_by_id[q].text for q in query_ids
    ]
    keys = list(dict.fromkeys(content_key(encoder.id, text) for text in texts))
    vectors = encoder.cache.get_many(keys)
    blocks = max(1, min(shards, len(query_ids)))
    mined = ray.data.from_items(
        [{"query_id": q} for q in query_ids], override_num_blocks=blocks
    ).map_batches(
        mine_batch,  # type: ignore[arg-type]  # Ray's stubs allow no keyword-only arguments
        fn_kwargs={"dataset": ray.put(dataset), "vectors": ray.put(vectors), "config": config},
        batch_size=-(-len(query_ids) // blocks),
        batch_format="numpy",
        concurrency=blocks,
    )
    frames: list[pd.DataFrame] = []
    stats = MiningStats(method=config.method)
    for row in mined.iter_rows():
        frames.append(pd.read_parquet(io.BytesIO(row["samples"])))
        shard = json.loads(row["stats"])
        for name in _SUMMED_STATS:
            setattr(stats, name, getattr(stats, name) + shard[name])
        stats.seconds = max(stats.seconds, shard["seconds"])
    # Samples are ordered by query id first and each query is mined in one shard, so a stable
    # sort by query id of the shards' rows is the order of one pass.
    frame = pd.concat(frames, ignore_index=True).sort_values("query_id", kind="mergesort")
    return frame.reset_index(drop=True), stats
