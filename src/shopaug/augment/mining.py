"""Hard-negative mining with a retriever (dense, BM25 or hybrid), with a false-negative filter,
and the random and popularity-weighted baselines.

For every training query the retriever ranks the whole catalog (in batches, with cached
embeddings and an exact FAISS index). Candidates ranked in ``[range_min, range_max)`` that are
not known positives are kept when they score clearly below the query's positives:

- relative margin: ``score < reference * (1 - margin)``;
- absolute margin: ``score < reference - margin``;

where ``reference`` is the mean (or min / max) score of the query's positives. A candidate within
the margin looks too relevant to be a safe negative: it is dropped and counted as a filtered
false negative. When a cross-encoder is given, candidates it judges relevant (probability above
``cross_encoder_threshold``) are dropped as well. From what is left, ``negatives_per_query``
are chosen by rank (``top``) or uniformly at random (``random``, seeded).

This mirrors sentence-transformers' ``mine_hard_negatives`` (range_min, range_max, margin,
sampling strategy), but scores the catalog once per run, in chunks, and reuses embeddings.

Why one module of this length: the three retrieval miners and the two baselines share the
positive, exclusion and margin rules that make their negatives comparable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from shopaug.augment.samples import samples_frame
from shopaug.data.records import DEFAULT_TEXT_FIELDS, Dataset
from shopaug.errors import ConfigError
from shopaug.retrieval.retrievers import (
    DenseRetriever,
    Retriever,
    RetrieverConfig,
    build_retriever,
)
from shopaug.samplers import PopularitySampler, UniformSampler

logger = logging.getLogger(__name__)

RETRIEVAL_METHODS = ("bm25", "dense", "hybrid")
BASELINE_METHODS = ("random", "popular")
#: Scores pairs (query text, product text) -> probability of relevance (a cross-encoder).
PairScorer = Callable[[Sequence[tuple[str, str]]], np.ndarray]


@dataclass
class MiningConfig:
    """Hard-negative mining settings.

    Attributes:
        method: ``dense``, ``bm25``, ``hybrid``, ``random`` or ``popular``.
        negatives_per_query: negatives kept per query.
        range_min: skip the top ``range_min`` ranks (they hide unlabelled positives).
        range_max: look no deeper than this rank.
        margin: how far below the positives a negative must score (0 disables the filter).
        margin_type: ``relative`` or ``absolute``.
        reference: which positive score the margin is taken from: ``mean``, ``min``, ``max``.
        sampling: ``top`` (best-ranked survivors) or ``random`` (seeded, uniform).
        positive_min_gain: judged gain from which a product is a positive sample.
        max_positives_per_query: cap on positive rows per query (highest gain first), 0 = all.
        label_fraction: share of each query's positive labels the miner may see (seeded, at
            least one per query). 1.0 uses all; a smaller value simulates a shop with few labels
            and lets the audit measure false negatives against the labels held back.
        popularity_alpha: exponent of the ``popular`` baseline (p ∝ count^alpha).
        cross_encoder_threshold: drop candidates a cross-encoder scores above this.
        model: dense model (``minilm``, a directory, or ``hashing`` for tests).
        text_fields: product fields the retriever sees.
        batch_size: queries retrieved per batch.
        seed: seed of every random choice.
    """

    method: str = "dense"
    negatives_per_query: int = 5
    range_min: int = 0
    range_max: int = 100
    margin: float = 0.05
    margin_type: str = "relative"
    reference: str = "mean"
    sampling: str = "top"
    positive_min_gain: int = 1
    max_positives_per_query: int = 0
    label_fraction: float = 1.0
    popularity_alpha: float = 0.75
    cross_encoder_threshold: float = 0.9
    model: str = "minilm"
    text_fields: tuple[str, ...] = DEFAULT_TEXT_FIELDS
    batch_size: int = 256
    seed: int = 0
    cache_dir: str | None = None
    show_progress: bool = True

    def validate(self) -> None:
        known = RETRIEVAL_METHODS + BASELINE_METHODS
        checks = [
            (self.method in known, f"method must be one of {known}, got {self.method!r}"),
            (self.negatives_per_query >= 1, "negatives_per_query must be at least 1"),
            (self.range_min >= 0, "range_min must be >= 0"),
            (
                self.range_max > self.range_min,
                f"range_max ({self.range_max}) must exceed range_min ({self.range_min})",
            ),
            (self.margin >= 0, f"margin must be >= 0, got {self.margin}"),
            (self.margin_type in ("relative", "absolute"), "margin_type: relative or absolute"),
            (self.reference in ("mean", "min", "max"), "reference must be mean, min or max"),
            (self.sampling in ("top", "random"), "sampling must be 'top' or 'random'"),
            (self.positive_min_gain >= 1, "positive_min_gain must be at least 1"),
            (self.max_positives_per_query >= 0, "max_positives_per_query must be >= 0"),
            (self.popularity_alpha >= 0, "popularity_alpha must be >= 0"),
            (0 < self.label_fraction <= 1, "label_fraction must be in (0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"mining config: {message}")


@dataclass
class MiningStats:
    method: str
    queries: int = 0
    positives: int = 0
    negatives: int = 0
    filtered_false_negatives: int = 0
    filtered_by_cross_encoder: int = 0
    queries_short_of_negatives: int = 0
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def visible_qrels(
    dataset: Dataset, query_ids: Sequence[str], label_fraction: float, seed: int
) -> dict[str, dict[str, int]]:
    """The judgments the miner may see: all, or a seeded ``label_fraction`` of each query's
    relevant ones (at least one), plus every judged-irrelevant pair."""
    qrels = dataset.qrels(query_ids=query_ids)
    if label_fraction >= 1.0:
        return qrels
    rng = np.random.default_rng(seed + 7919)
    visible: dict[str, dict[str, int]] = {}
    for qid in sorted(qrels):
        judged = qrels[qid]
        relevant = sorted(pid for pid, gain in judged.items() if gain > 0)
        n_keep = max(1, round(len(relevant) * label_fraction)) if relevant else 0
        keep = set(rng.choice(relevant, size=n_keep, replace=False).tolist()) if relevant else set()
        visible[qid] = {pid: g for pid, g in judged.items() if g == 0 or pid in keep}
    return visible


def positive_rows(
    dataset: Dataset,
    query_ids: Sequence[str],
    config: MiningConfig,
    visible: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, list[tuple[str, int]]]:
    """query id -> [(product id, gain)] of its visible positives, highest gain first, capped."""
    qrels = visible or visible_qrels(dataset, query_ids, config.label_fraction, config.seed)
    result: dict[str, list[tuple[str, int]]] = {}
    for qid in query_ids:
        judged = qrels.get(qid, {})
        ranked = sorted(
            ((pid, g) for pid, g in judged.items() if g >= config.positive_min_gain),
            key=lambda item: (-item[1], item[0]),
        )
        if config.max_positives_per_query:
            ranked = ranked[: config.max_positives_per_query]
        if ranked:
            result[qid] = ranked
    return result


def _visible_positives(
    dataset: Dataset, query_ids: Sequence[str], config: MiningConfig
) -> tuple[dict[str, list[tuple[str, int]]], dict[str, set[str]]]:
    """The positive rows to write, and per query every relevant product the miner may see
    (never a negative), from one pass over the visible labels."""
    visible = visible_qrels(dataset, query_ids, config.label_fraction, config.seed)
    positives = positive_rows(dataset, query_ids, config, visible)
    known = {qid: {pid for pid, g in visible.get(qid, {}).items() if g > 0} for qid in positives}
    return positives, known


def _positive_frame_rows(
    dataset: Dataset, positives: Mapping[str, list[tuple[str, int]]], seed: int
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for qid, products in positives.items():
        text = dataset.query_by_id[qid].text
        for pid, gain in products:
            rows.append(
                {
                    "query_id": qid,
                    "query": text,
                    "product_id": pid,
                    "label": 1,
                    "kind": "positive",
                    "method": "judged",
                    "source": f"labels:gain={gain}",
                    "seed": seed,
                    "score": float("nan"),
                    "rank": -1,
                }
            )
    return rows


def _reference_scores(
    retriever: Retriever,
    query_vectors: np.ndarray | None,
    rows: np.ndarray,
    scores: np.ndarray,
    positive_product_rows: list[np.ndarray],
    how: str,
) -> np.ndarray:
    """Per query, the reference positive score. Dense: exact cosine of each positive; others:
    its score in the retrieved list, or the list's lowest score when it was not retrieved."""
    reducers: dict[str, Callable[..., Any]] = {"mean": np.mean, "min": np.min, "max": np.max}
    reduce = reducers[how]
    out = np.zeros(len(positive_product_rows))
    for q, positive in enumerate(positive_product_rows):
        if isinstance(retriever, DenseRetriever) and query_vectors is not None:
            values = retriever.item_vectors[positive] @ query_vectors[q]
        else:
            found = dict(zip(rows[q].tolist(), scores[q].tolist()))
            floor = float(np.min(scores[q][rows[q] >= 0])) if (rows[q] >= 0).any() else 0.0
            values = np.array([found.get(int(p), floor) for p in positive])
        out[q] = float(reduce(values))
    return out


def mine_hard_negatives(
    dataset: Dataset,
    query_ids: Sequence[str],
    config: MiningConfig,
    *,
    retriever: Retriever | None = None,
    cross_encoder: PairScorer | None = None,
) -> tuple[pd.DataFrame, MiningStats]:
    """Mine hard negatives for ``query_ids`` (train queries only) with a retriever.

    Returns the samples (positives then negatives per query, in query order) and statistics.
    """
    config.validate()
    if config.method not in RETRIEVAL_METHODS:
        raise ConfigError(f"mine_hard_negatives needs a retrieval method, got {config.method!r}")
    start = time.perf_counter()
    retriever = retriever or build_retriever(
        dataset,
        RetrieverConfig(
            kind=config.method,
            model=config.model,
            text_fields=config.text_fields,
            cache_dir=config.cache_dir,
            show_progress=config.show_progress,
        ),
    )
    positives, all_relevant = _visible_positives(dataset, query_ids, config)
    index = dataset.product_index
    stats = MiningStats(method=config.method, queries=len(positives))
    rng = np.random.default_rng(config.seed)
    negative_rows: list[dict[str, object]] = []
    ordered = list(positives)
    texts = dataset.product_texts(config.text_fields) if cross_encoder else []
    for batch_start in tqdm(
        range(0, len(ordered), config.batch_size),
        desc=f"mine {config.method}",
        disable=not config.show_progress,
        unit="batch",
    ):
        batch = ordered[batch_start : batch_start + config.batch_size]
        query_texts = [dataset.query_by_id[qid].text for qid in batch]
        known = [np.array([index[p] for p in all_relevant[qid]], dtype=np.int64) for qid in batch]
        depth = config.range_max + max(len(k) for k in known)
        query_vectors = None
        if isinstance(retriever, DenseRetriever):
            query_vectors = retriever.encode_queries(query_texts)
            rows, scores = retriever.index.search(query_vectors, depth)
        else:
            rows, scores = retriever.search(query_texts, depth)
        reference = _reference_scores(
            retriever,
            query_vectors,
            rows,
            scores,
            [np.array([index[p] for p, _ in positives[qid]]) for qid in batch],
            config.reference,
        )
        for q, qid in enumerate(batch):
            negative_rows.extend(
                _select_negatives(
                    qid,
                    query_texts[q],
                    rows[q],
                    scores[q],
                    set(known[q].tolist()),
                    reference[q],
                    config,
                    rng,
                    stats,
                    dataset,
                    cross_encoder,
                    texts,
                    retriever.id,
                )
            )
    stats.positives = sum(len(p) for p in positives.values())
    stats.negatives = len(negative_rows)
    stats.seconds = time.perf_counter() - start
    frame = samples_frame(_positive_frame_rows(dataset, positives, config.seed) + negative_rows)
    return _order(frame), stats


def _select_negatives(
    qid: str,
    query_text: str,
    rows: np.ndarray,
    scores: np.ndarray,
    known: set[int],
    reference: float,
    config: MiningConfig,
    rng: np.random.Generator,
    stats: MiningStats,
    dataset: Dataset,
    cross_encoder: PairScorer | None,
    texts: Sequence[str],
    source: str,
) -> list[dict[str, object]]:
    if config.margin_type == "relative":
        threshold = reference * (1 - config.margin) if reference > 0 else reference
    else:
        threshold = reference - config.margin
    candidates: list[tuple[int, int, float]] = []  # (rank 1-based, row, score)
    rank = 0
    for row, score in zip(rows.tolist(), scores.tolist()):
        if row < 0:
            break
        if row in known:
            continue  # known positives are never negatives, and do not use up the window
        rank += 1
        if rank <= config.range_min:
            continue
        if rank > config.range_max:
            break
        if config.margin > 0 and score >= threshold:
            stats.filtered_false_negatives += 1
            continue
        candidates.append((rank, row, score))
    if cross_encoder is not None and candidates:
        probabilities = np.asarray(
            cross_encoder([(query_text, texts[r]) for _, r, _ in candidates])
        )
        keep = probabilities <= config.cross_encoder_threshold
        stats.filtered_by_cross_encoder += int((~keep).sum())
        candidates = [c for c, k in zip(candidates, keep) if k]
    n = config.negatives_per_query
    if len(candidates) < n:
        stats.queries_short_of_negatives += 1
    if config.sampling == "random" and len(candidates) > n:
        picked = np.sort(rng.choice(len(candidates), size=n, replace=False))
        chosen = [candidates[i] for i in picked]
    else:
        chosen = candidates[:n]
    return [
        {
            "query_id": qid,
            "query": query_text,
            "product_id": dataset.products[row].id,
            "label": 0,
            "kind": "negative",
            "method": config.method,
            "source": source,
            "seed": config.seed,
            "score": float(score),
            "rank": int(rank),
        }
        for rank, row, score in chosen
    ]


def popularity_counts(
    dataset: Dataset, *, query_ids: Iterable[str] | None
) -> tuple[np.ndarray, str]:
    """Per catalog row, the number of interactions (clicks, carts, purchases), or, when there are
    none, of relevant judgments. Returns the counts and where they came from.

    Args:
        dataset: The data set whose catalog rows are counted.
        query_ids: Count only judgments and interactions of these queries (the training
            queries), so that test judgments never shape what a sampler draws. Interactions
            without a query id (a browsing log) always count. ``None`` counts the whole data
            set: only for describing it (e.g. head/tail segments), never for training.

    Returns:
        ``(counts, origin)``: counts of shape ``(n_products,)`` and ``"interactions"`` or
        ``"judgments"``.
    """
    keep = None if query_ids is None else set(query_ids)

    def counted(query_id: str) -> bool:
        return keep is None or query_id in keep

    counts = np.zeros(len(dataset.products))
    index = dataset.product_index
    events = [
        i
        for i in dataset.interactions
        if i.event != "impression" and (not i.query_id or counted(i.query_id))
    ]
    if events:
        for event in events:
            counts[index[event.product_id]] += 1
        return counts, "interactions"
    for judgment in dataset.judgments:
        if counted(judgment.query_id) and dataset.gains.get(judgment.label, 0) > 0:
            counts[index[judgment.product_id]] += 1
    return counts, "judgments"


def sample_baseline_negatives(
    dataset: Dataset, query_ids: Sequence[str], config: MiningConfig
) -> tuple[pd.DataFrame, MiningStats]:
    """Random (uniform) or popularity^alpha negatives: the baselines mined negatives must beat.

    Popularity is counted over ``query_ids`` (the training queries) only, see
    :func:`popularity_counts`.
    """
    config.validate()
    if config.method not in BASELINE_METHODS:
        raise ConfigError(
            f"baseline negatives: method must be random or popular, got {config.method!r}"
        )
    start = time.perf_counter()
    positives, relevant = _visible_positives(dataset, query_ids, config)
    index = dataset.product_index
    n_items = len(dataset.products)
    if config.method == "random":
        sampler: UniformSampler | PopularitySampler = UniformSampler(n_items, replace=False)
        source = "uniform"
    else:
        # Training queries only: test judgments must not shape the negatives.
        counts, origin = popularity_counts(dataset, query_ids=query_ids)
        sampler = PopularitySampler(counts, alpha=config.popularity_alpha, replace=False)
        source = f"popularity^{config.popularity_alpha}:{origin}"
    ordered = list(positives)
    rng = np.random.default_rng(config.seed)
    first_positive = np.array([index[positives[q][0][0]] for q in ordered], dtype=np.int64)
    drawn = sampler.sample(
        query_rows=np.arange(len(ordered), dtype=np.int64),
        positive_rows=first_positive,
        n=config.negatives_per_query,
        rng=rng,
        exclude=[{index[p] for p in relevant[q]} for q in ordered],
    )
    negatives: list[dict[str, object]] = []
    for q, qid in enumerate(ordered):
        for item in drawn.items[q].tolist():
            negatives.append(
                {
                    "query_id": qid,
                    "query": dataset.query_by_id[qid].text,
                    "product_id": dataset.products[item].id,
                    "label": 0,
                    "kind": "negative",
                    "method": config.method,
                    "source": source,
                    "seed": config.seed,
                    "score": float("nan"),
                    "rank": -1,
                }
            )
    stats = MiningStats(
        method=config.method,
        queries=len(ordered),
        negatives=len(negatives),
        positives=sum(len(p) for p in positives.values()),
        seconds=time.perf_counter() - start,
    )
    frame = samples_frame(_positive_frame_rows(dataset, positives, config.seed) + negatives)
    return _order(frame), stats


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    """A deterministic row order: by query id, positives first, then rank, then product id."""
    if frame.empty:
        return frame
    frame = frame.assign(_kind=(frame["kind"] != "positive").astype(int))
    frame = frame.sort_values(
        ["query_id", "_kind", "method", "rank", "product_id"], kind="mergesort"
    )
    return frame.drop(columns="_kind").reset_index(drop=True)
