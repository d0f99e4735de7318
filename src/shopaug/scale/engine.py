"""``--engine ray``: the augmentation steps of ``shopaug run`` on a Ray cluster.

:func:`ray_engine` joins the cluster named by ``RAY_ADDRESS`` (or starts a local Ray instance)
and yields a :class:`RayEngine`, whose :meth:`RayEngine.augment` takes the arguments of
:func:`shopaug.augment.pipeline.augment` and returns the same samples and summary:

- the texts a method encodes (the catalog and the training queries for dense and hybrid
  mining, the catalog for the synthetic queries' round trip) are encoded on Ray Data
  (``map_batches`` over shards, :func:`shopaug.scale.encoding.encode_into_cache`) into the
  driver's embedding cache;
- dense mining whose samples depend on each query alone is mined on Ray Data over shards of
  query ids (:func:`shopaug.scale.encoding.mine_dense_on_ray`);
- everything else (BM25 and hybrid mining, the baselines, near-miss variants, synthetic
  queries) runs through the unchanged ``augment`` on the driver, reading the vectors just
  encoded. Generation is not sharded: the generators draw from one seeded stream in product
  order, so shards would change the samples; a remote LLM endpoint is where it scales.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from shopaug.augment.pipeline import AugmentConfig, augment, samples_summary
from shopaug.config import from_mapping, seeded
from shopaug.data.records import Dataset
from shopaug.errors import require

logger = logging.getLogger(__name__)

ENCODING_METHODS = ("dense", "hybrid", "synthetic-queries")
"""Methods that encode texts with a dense model before they run."""


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`~shopaug.errors.MissingExtraError` naming
    ``pip install 'shopaug[scale]'``."""
    require("ray.data", "scale")
    return require("ray", "scale")


@dataclass
class RayEngine:
    """Makes samples on the Ray cluster this process is connected to.

    Attributes:
        shards: Blocks (and worker actors) per ``map_batches``: the cluster's CPUs by default.
        batch_size: Texts per encoding batch.
    """

    shards: int
    batch_size: int = 256

    def augment(
        self,
        dataset: Dataset,
        method: str,
        query_ids: Sequence[str],
        *,
        config: AugmentConfig | None = None,
        seed: int = 0,
        show_progress: bool = True,
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        """:func:`shopaug.augment.pipeline.augment` with its encoding and dense mining on Ray;
        the same samples and summary (timings aside)."""
        from shopaug.augment.mining import MiningConfig
        from shopaug.retrieval.retrievers import build_encoder
        from shopaug.scale.encoding import can_shard_mining, encode_into_cache, mine_dense_on_ray

        config = config or AugmentConfig()
        mining = from_mapping(
            MiningConfig, seeded(config.mining, seed, name="mining"), section="mining"
        )
        _quiet_progress(show_progress)
        if method not in ENCODING_METHODS or mining.model == "bm25":
            return augment(
                dataset, method, query_ids, config=config, seed=seed, show_progress=show_progress
            )
        encoder = build_encoder(mining.model, mining.cache_dir)
        texts = dataset.product_texts(mining.text_fields)
        if method != "synthetic-queries":
            texts = texts + [dataset.query_by_id[q].text for q in query_ids]
        encode_into_cache(
            encoder, mining.model, texts, shards=self.shards, batch_size=self.batch_size
        )
        mining.method, mining.show_progress = method, show_progress
        if method != "dense" or not can_shard_mining(mining):
            return augment(
                dataset, method, query_ids, config=config, seed=seed, show_progress=show_progress
            )
        frame, stats = mine_dense_on_ray(
            dataset, query_ids, mining, encoder=encoder, shards=self.shards
        )
        summary = samples_summary(
            dataset,
            method,
            query_ids,
            frame,
            seed=seed,
            details=asdict(stats),
            seconds=stats.seconds,
        )
        return frame, {**summary, "engine": "ray"}


def _quiet_progress(show_progress: bool) -> None:
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = show_progress


@contextmanager
def ray_engine(*, address: str | None = None, num_cpus: int | None = None) -> Iterator[RayEngine]:
    """Connect to Ray and yield a :class:`RayEngine`; a Ray instance started here is shut
    down at the end, one that was already running is left alone.

    Args:
        address: A cluster address (``ray://host:10001`` or ``host:6379``); default
            ``$RAY_ADDRESS``, else a local instance.
        num_cpus: CPUs of a local instance (default: all).

    Raises:
        MissingExtraError: ``shopaug[scale]`` is not installed.
    """
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        local = {} if address else {"num_cpus": num_cpus}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **local)
        started = True
        logger.info("Ray: %s", ray.cluster_resources())
    try:
        yield RayEngine(shards=max(1, int(ray.cluster_resources().get("CPU", 1))))
    finally:
        if started:
            ray.shutdown()
