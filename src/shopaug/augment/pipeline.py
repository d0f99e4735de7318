"""``shopaug augment``: one entry point that runs any augmentation method on the train queries."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from shopaug.augment.judged import JUDGED_METHODS, judged_samples
from shopaug.augment.mining import (
    BASELINE_METHODS,
    RETRIEVAL_METHODS,
    MiningConfig,
    mine_hard_negatives,
    positive_rows,
    sample_baseline_negatives,
)
from shopaug.config import from_mapping, seeded
from shopaug.data.records import Dataset
from shopaug.errors import ConfigError

logger = logging.getLogger(__name__)

#: Sample sources: judged ones (what a shop has), negative baselines, and augmentation methods.
AUGMENT_METHODS = (
    *JUDGED_METHODS,
    *BASELINE_METHODS,
    *RETRIEVAL_METHODS,
    "near-miss",
    "synthetic-queries",
)


@dataclass
class AugmentConfig:
    """The sections of an augmentation config file (YAML): ``mining``, ``near_miss``,
    ``synthetic_queries`` and ``generator``; each maps to its method's config dataclass."""

    mining: dict[str, Any] = field(default_factory=dict)
    near_miss: dict[str, Any] = field(default_factory=dict)
    synthetic_queries: dict[str, Any] = field(default_factory=dict)
    generator: dict[str, Any] = field(default_factory=dict)


def augment(
    dataset: Dataset,
    method: str,
    query_ids: Sequence[str],
    *,
    config: AugmentConfig | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run ``method`` on ``query_ids`` (the train queries) and return (samples, summary)."""
    config = config or AugmentConfig()
    if method not in AUGMENT_METHODS:
        raise ConfigError(
            f"unknown method {method!r}; expected one of {', '.join(AUGMENT_METHODS)}"
        )
    start = time.perf_counter()
    mining = from_mapping(
        MiningConfig, seeded(config.mining, seed, name="mining"), section="mining"
    )
    mining.show_progress = show_progress
    if method in JUDGED_METHODS:
        frame, counts = judged_samples(
            dataset, query_ids, mining, negatives=method == "human-negatives"
        )
        details: dict[str, Any] = dict(counts)
    elif method in RETRIEVAL_METHODS or method in BASELINE_METHODS:
        mining.method = method
        run = mine_hard_negatives if method in RETRIEVAL_METHODS else sample_baseline_negatives
        frame, stats = run(dataset, query_ids, mining)
        details = asdict(stats)
    elif method == "near-miss":
        frame, details = _near_miss(dataset, query_ids, mining, config, seed)
    else:
        frame, details = _synthetic_queries(dataset, query_ids, mining, config, seed)
    summary = samples_summary(
        dataset,
        method,
        query_ids,
        frame,
        seed=seed,
        details=details,
        seconds=time.perf_counter() - start,
    )
    return frame, summary


def samples_summary(
    dataset: Dataset,
    method: str,
    query_ids: Sequence[str],
    frame: pd.DataFrame,
    *,
    seed: int,
    details: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """The summary :func:`augment` returns beside its samples (also for samples made on Ray,
    :mod:`shopaug.scale`): rows per ``kind/method``, the method's details and the time."""
    counts = {
        f"{kind}/{name}": int(n)
        for kind, name, n in frame.groupby(["kind", "method"])
        .size()
        .reset_index()
        .itertuples(index=False)
    }
    return {
        "dataset": dataset.name,
        "method": method,
        "seed": seed,
        "train_queries": len(query_ids),
        "rows": len(frame),
        "counts": counts,
        "details": details,
        "seconds": round(float(seconds), 3),
    }


def _sampling_settings(config: AugmentConfig) -> dict[str, Any]:
    """``temperature`` and ``max_tokens`` given in the generator section apply to the method
    that calls the generator, unless its own section sets them."""
    return {k: config.generator[k] for k in ("temperature", "max_tokens") if k in config.generator}


def _near_miss(
    dataset: Dataset,
    query_ids: Sequence[str],
    mining: MiningConfig,
    config: AugmentConfig,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    from shopaug.augment.mining import _order, _positive_frame_rows
    from shopaug.augment.near_miss import NearMissConfig, near_miss_negatives
    from shopaug.augment.samples import samples_frame

    near_config = from_mapping(
        NearMissConfig,
        seeded({**_sampling_settings(config), **config.near_miss}, seed, name="near_miss"),
        section="near_miss",
    )
    if config.generator:
        from shopaug.llm.registry import GeneratorConfig, build_generator

        near_config.generator = build_generator(
            from_mapping(GeneratorConfig, config.generator, section="generator")
        )
    positives = positive_rows(dataset, query_ids, mining)
    frame, stats = near_miss_negatives(
        dataset, {q: {p for p, _ in ps} for q, ps in positives.items()}, near_config
    )
    positive_frame = samples_frame(_positive_frame_rows(dataset, positives, seed))
    combined = _order(pd.concat([positive_frame, frame], ignore_index=True))
    return combined, asdict(stats)


def _synthetic_queries(
    dataset: Dataset,
    query_ids: Sequence[str],
    mining: MiningConfig,
    config: AugmentConfig,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    import numpy as np

    from shopaug.augment.synthetic_queries import SyntheticQueryConfig, synthetic_queries
    from shopaug.llm.registry import GeneratorConfig, build_generator
    from shopaug.retrieval.retrievers import RetrieverConfig, build_retriever

    synth_config = from_mapping(
        SyntheticQueryConfig,
        seeded(
            {**_sampling_settings(config), **config.synthetic_queries},
            seed,
            name="synthetic_queries",
        ),
        section="synthetic_queries",
    )
    generator = build_generator(
        from_mapping(
            GeneratorConfig, seeded(config.generator, seed, name="generator"), section="generator"
        )
    )
    retriever = build_retriever(
        dataset,
        RetrieverConfig(
            kind="dense" if mining.model != "bm25" else "bm25",
            model=mining.model,
            text_fields=mining.text_fields,
            cache_dir=mining.cache_dir,
            show_progress=mining.show_progress,
        ),
    )

    def round_trip(queries: Sequence[str], k: int) -> list[list[str]]:
        rows, _ = retriever.search(list(queries), k)
        return [[dataset.products[int(r)].id for r in row if r >= 0] for row in np.asarray(rows)]

    train = dataset.subset(query_ids)  # few-shot examples come from train queries only
    frame, stats = synthetic_queries(train, generator, round_trip, synth_config)
    return frame, asdict(stats)
