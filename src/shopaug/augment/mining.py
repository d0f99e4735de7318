"""Hard-negative mining with a retriever (dense, BM25 or hybrid), with a false-negative filter,
and the random and popularity-weighted baselines.

For every training query the retriever ranks the whole catalog (in batches, with cached
embeddings and an exact FAISS index, searched as deep as the window needs). Candidates ranked
``range_min + 1`` to ``range_max`` among the rows that are not known positives are kept when
they score clearly below the query's positives (array operations over each batch,
:mod:`shopaug.augment.candidates`):

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

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from shopaug.augment.candidates import (
    known_mask,
    margin_thresholds,
    positive_scores,
    reduce_per_query,
    retrieved_scores,
    select_window,
    take_negatives,
)
from shopaug.augment.samples import SAMPLE_COLUMNS, samples_frame
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
#: Fewest queries a dense mining batch searches at once (see ``MiningConfig.batch_size``).
DENSE_SEARCH_BATCH = 2048
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
        positive_fallback_gain: for a query with no product at ``positive_min_gain``, its
            products at this gain or above are its positives (WANDS: a query whose best label
            is Partial keeps its Partial products, as a sentence-transformers fine-tune on the
            same labels would); ``None``: such a query has no positive and trains nothing.
        max_positives_per_query: cap on positive rows per query (highest gain first), 0 = all.
        label_fraction: share of each query's positive labels the miner may see (seeded, at
            least one per query). 1.0 uses all; a smaller value simulates a shop with few labels
            and lets the audit measure false negatives against the labels held back.
        popularity_alpha: exponent of the ``popular`` baseline (p ∝ count^alpha).
        cross_encoder_threshold: drop candidates a cross-encoder scores above this.
        model: dense model (``minilm``, a directory, or ``hashing`` for tests).
        text_fields: product fields the retriever sees.
        batch_size: queries retrieved per batch (one search each). Dense retrieval takes
            at least :data:`DENSE_SEARCH_BATCH` at a time: FAISS scores a batch with BLAS
            only from 128,000 / dim queries (334 for 384-d vectors), query by query below
            that, and a dense batch's depth changes nothing but the work (its reference
            scores are exact). BM25 and hybrid keep ``batch_size``: the score standing in
            for a positive they did not retrieve is the lowest of the batch's list.
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
    positive_fallback_gain: int | None = 1
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
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
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
        least = config.positive_min_gain
        if config.positive_fallback_gain is not None and not any(
            g >= least for g in judged.values()
        ):
            least = max(config.positive_fallback_gain, 1)
        ranked = sorted(
            ((pid, g) for pid, g in judged.items() if g >= least),
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


#: (query of each pair, catalog row of each pair): the known positives of a batch of queries.
_Pairs = tuple[np.ndarray, np.ndarray]


def _pairs(groups: Sequence[Iterable[str]], index: Mapping[str, int]) -> _Pairs:
    """Product ids per query -> (query position, catalog row) pairs, grouped by query."""
    rows = [[index[p] for p in group] for group in groups]
    query_of = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    return query_of, np.fromiter((r for group in rows for r in group), np.int64, len(query_of))


def mine_hard_negatives(
    dataset: Dataset,
    query_ids: Sequence[str],
    config: MiningConfig,
    *,
    retriever: Retriever | None = None,
    cross_encoder: PairScorer | None = None,
) -> tuple[pd.DataFrame, MiningStats]:
    """Mine hard negatives for ``query_ids`` (train queries only) with a retriever.

    Each batch of ``config.batch_size`` queries (dense: at least :data:`DENSE_SEARCH_BATCH`)
    is searched once, to the depth its window needs (``range_max`` plus the most known
    positives of a query in the batch, as those do not use up the window); the reference
    scores, the window, the exclusion of known positives, the margin filter and ``top``
    sampling are array operations over the batch (:mod:`shopaug.augment.candidates`).

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
    ordered = list(positives)
    texts = dataset.product_texts(config.text_fields) if cross_encoder else []
    negatives: list[tuple[np.ndarray, ...]] = []  # (query position, row, score, rank) per batch
    dense = isinstance(retriever, DenseRetriever)
    step = max(config.batch_size, DENSE_SEARCH_BATCH) if dense else config.batch_size
    for batch_start in tqdm(
        range(0, len(ordered), step),
        desc=f"mine {config.method}",
        disable=not config.show_progress,
        unit="batch",
    ):
        batch = ordered[batch_start : batch_start + step]
        query_texts = [dataset.query_by_id[qid].text for qid in batch]
        known = _pairs([all_relevant[qid] for qid in batch], index)
        depth = config.range_max + int(np.bincount(known[0], minlength=len(batch)).max())
        query_vectors = None
        if isinstance(retriever, DenseRetriever):
            query_vectors = retriever.encode_queries(query_texts)
            rows, scores = retriever.index.search(query_vectors, depth)
        else:
            rows, scores = retriever.search(query_texts, depth)
        owner, positive = _pairs([[p for p, _ in positives[qid]] for qid in batch], index)
        if isinstance(retriever, DenseRetriever) and query_vectors is not None:
            values = positive_scores(retriever.item_vectors, query_vectors, owner, positive)
        else:  # the retrieved score, the list's lowest for a positive not retrieved
            values = retrieved_scores(rows, scores, owner, positive)
        reference = reduce_per_query(values, owner, config.reference)
        window = select_window(
            rows,
            scores,
            known_mask(rows, *known),
            range_min=config.range_min,
            range_max=config.range_max,
            threshold=margin_thresholds(reference, config.margin, config.margin_type),
        )
        stats.filtered_false_negatives += int(window.filtered.sum())
        candidates = window.candidates
        if cross_encoder is not None and candidates.any():
            candidates = _cross_encoder_filter(
                candidates, rows, query_texts, texts, cross_encoder, config, stats
            )
        n = config.negatives_per_query
        stats.queries_short_of_negatives += int((candidates.sum(axis=1) < n).sum())
        chosen = take_negatives(candidates, n, sampling=config.sampling, rng=rng)
        query_of, position = np.nonzero(chosen)  # query order, then rank order
        negatives.append(
            (
                query_of + batch_start,
                rows[query_of, position],
                scores[query_of, position].astype(np.float64),
                window.ranks[query_of, position],
            )
        )
    stats.positives = sum(len(p) for p in positives.values())
    stats.negatives = sum(len(part[0]) for part in negatives)
    frame = _mined_frame(dataset, positives, negatives, config, retriever.id)
    stats.seconds = time.perf_counter() - start
    return frame, stats


def _mined_frame(
    dataset: Dataset,
    positives: Mapping[str, list[tuple[str, int]]],
    negatives: list[tuple[np.ndarray, ...]],
    config: MiningConfig,
    source: str,
) -> pd.DataFrame:
    """The samples table of a mining run, built column by column in the row order of
    :func:`_order` (query id; its positives by product id, then its negatives by rank)."""
    ordered = list(positives)
    if not ordered:
        return samples_frame([])
    query_ids = np.array(ordered, dtype=object)
    query_texts = np.array([dataset.query_by_id[q].text for q in ordered], dtype=object)
    counts = [len(positives[q]) for q in ordered]
    positive_ids = np.array([p for q in ordered for p, _ in positives[q]], dtype=object)
    gains = [gain for q in ordered for _, gain in positives[q]]
    negative_query, negative_row, negative_score, negative_rank = (
        np.concatenate(column) for column in zip(*negatives)
    )
    product_ids = np.array([product.id for product in dataset.products], dtype=object)
    n_positive, n_negative = len(positive_ids), len(negative_query)
    query = np.concatenate([np.repeat(np.arange(len(ordered)), counts), negative_query])
    # Sort keys as integers: the query id's rank, kind, then product id rank or retrieval rank.
    query_rank = np.argsort(np.argsort(query_ids, kind="stable"), kind="stable")
    within = np.concatenate([np.argsort(np.argsort(positive_ids, kind="stable")), negative_rank])
    kind = np.repeat([0, 1], [n_positive, n_negative])
    order = np.lexsort((within, kind, query_rank[query]))
    query, is_positive = query[order], order < n_positive
    sources = np.array([f"labels:gain={gain}" for gain in gains] + [source] * n_negative, object)
    frame = pd.DataFrame(
        {  # text columns as lists: pandas infers their dtype as for samples_frame's rows
            "query_id": query_ids[query].tolist(),
            "query": query_texts[query].tolist(),
            "product_id": np.concatenate([positive_ids, product_ids[negative_row]])[order].tolist(),
            "label": is_positive.astype(np.int64),
            "kind": np.where(is_positive, "positive", "negative").astype(object).tolist(),
            "method": np.where(is_positive, "judged", config.method).astype(object).tolist(),
            "source": sources[order].tolist(),
            "seed": np.full(len(order), config.seed, dtype=np.int64),
            "score": np.concatenate([np.full(n_positive, np.nan), negative_score])[order],
            "rank": np.concatenate([np.full(n_positive, -1, np.int64), negative_rank])[order],
        }
    )
    return frame[list(SAMPLE_COLUMNS)]


def _cross_encoder_filter(
    candidates: np.ndarray,
    rows: np.ndarray,
    query_texts: Sequence[str],
    texts: Sequence[str],
    cross_encoder: PairScorer,
    config: MiningConfig,
    stats: MiningStats,
) -> np.ndarray:
    """``candidates`` without those the cross-encoder judges relevant (one call per batch)."""
    query_of, position = np.nonzero(candidates)
    pairs = [
        (query_texts[q], texts[r])
        for q, r in zip(query_of.tolist(), rows[query_of, position].tolist())
    ]
    keep = np.asarray(cross_encoder(pairs)) <= config.cross_encoder_threshold
    stats.filtered_by_cross_encoder += int((~keep).sum())
    kept = np.zeros_like(candidates)
    kept[query_of[keep], position[keep]] = True
    return kept


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
