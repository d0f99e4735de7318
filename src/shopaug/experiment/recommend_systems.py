"""The systems of the recommendation task: baselines, and two-tower rows trained per sampler.

Baselines are fitted on a split's training baskets and rank its catalog. A two-tower row trains
:class:`~shopaug.models.two_tower.TwoTowerRecommender` with :func:`shopaug.train.fit` on the
*validation* split's training baskets (invoices before the validation cut), early-stopping on
validation baskets; the same weights then rank the test catalog from each customer's history up
to the test cut. No user or item id is learned, so a history that grows needs no retraining.

Negatives come from :mod:`shopaug.samplers` over the items sold before the validation cut only
(nothing later reaches the negatives). A customer's purchases before the cut are never the
negatives of that customer's examples (:func:`purchase_exclusions`): the samplers skip them
(their ``exclude`` rows) and the loss leaves them out of the row's own and in-batch candidates
(a masked cell, ``-inf`` in the softmax), through ``NegativeSampling.exclusions``:

=============  ========================================================================
``uniform``    :class:`~shopaug.samplers.UniformSampler`
``popularity`` :class:`~shopaug.samplers.PopularitySampler` (count ** alpha), optional logQ
``in_batch``   :class:`~shopaug.samplers.InBatchSampler`: other positives of the batch, logQ
``text_hard``  each positive's nearest items by text (:class:`~shopaug.retrieval.ranking.
               CatalogRanker` over the MiniLM vectors) as own negatives, plus uniform ones
``dynamic``    :class:`~shopaug.samplers.DynamicSampler`: softmax of the current model's
               scores over a candidate subset, refreshed every step
=============  ========================================================================
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shopaug.eval.recommend import per_customer_metrics
from shopaug.experiment.recommend_data import (
    TUNED_BASELINES,
    RecommendConfig,
    SplitView,
    TwoTowerRow,
)
from shopaug.models.recommenders import (
    CoOccurrence,
    ImplicitFactors,
    Popularity,
    Recommender,
    RepeatPurchase,
    TifuKnn,
    TifuKnnConfig,
    decayed_frequency_config,
    top_k,
)
from shopaug.models.two_tower import TwoTowerRecommender, history_text
from shopaug.retrieval.ranking import CatalogRanker
from shopaug.samplers import SamplerConfig, build_sampler
from shopaug.train.config import TrainingExample
from shopaug.train.sampling import NegativeSampling, SampledBatch

logger = logging.getLogger(__name__)
Ranked = dict[str, list[str]]


def baseline(
    name: str, view: SplitView, config: RecommendConfig, tuned: TifuKnnConfig | None = None
) -> Recommender:
    """Fit baseline ``name`` on the split's training baskets (``tuned``: the hyper-parameters
    :func:`tune_tifu_knn` chose on validation, for the baselines of ``TUNED_BASELINES``)."""
    data = view.interactions
    if name in TUNED_BASELINES:
        if tuned is None:
            raise ValueError(f"baseline {name!r} needs its tuned hyper-parameters")
        return TifuKnn(data, tuned)
    if name == "popularity":
        return Popularity(data)
    if name == "repeat":
        return RepeatPurchase(data)
    if name == "cooccurrence":
        return CoOccurrence(data)
    if name == "als":
        return ImplicitFactors(data, "als", replace(config.factors, seed=config.seed))
    if name == "bpr":
        factors = replace(config.factors, seed=config.seed, iterations=config.bpr_iterations)
        return ImplicitFactors(data, "bpr", factors)
    raise ValueError(f"unknown baseline {name!r}")


def tune_tifu_knn(
    name: str, valid: SplitView, config: RecommendConfig
) -> tuple[TifuKnnConfig, dict[str, Any]]:
    """The hyper-parameters of ``name`` (``tifu_knn`` or ``decayed_frequency``) with the best
    validation Recall@k over ``config.tifu`` (fitted on the validation split's training baskets,
    measured on its baskets; the test split is never read). Ties go to the first in grid order.

    Returns:
        The chosen config, and ``{"searched", "validation_recall", "top": [5 best]}``.
    """
    grid = config.tifu
    customers, histories = list(valid.customers), list(valid.histories)
    baskets = [valid.truth.baskets[c] for c in customers]
    key = f"recall@{config.k}"

    def recall(scores: np.ndarray) -> float:
        rows = top_k(scores, config.k)
        lists = [[valid.catalog[int(r)] for r in found] for found in rows]
        return float(per_customer_metrics(ranked=lists, baskets=baskets, k=config.k)[key].mean())

    tried: list[tuple[float, TifuKnnConfig]] = []
    if name == "decayed_frequency":
        for decay in grid.frequency_decay:
            candidate = decayed_frequency_config(decay)
            model = TifuKnn(valid.interactions, candidate)
            tried.append((recall(model.score(customers, histories)), candidate))
    elif name == "tifu_knn":
        for size, within, group in itertools.product(
            grid.group_size, grid.within_decay, grid.group_decay
        ):
            settings = TifuKnnConfig(group_size=size, within_decay=within, group_decay=group)
            model = TifuKnn(valid.interactions, settings)
            own = model.own_vectors(customers, histories)
            for k in grid.neighbours:
                neighbours = model.neighbour_means(customers, own, k)
                for alpha in grid.alpha:
                    candidate = replace(settings, neighbours=k, alpha=alpha)
                    tried.append((recall(model.blend(own, neighbours, alpha)), candidate))
    else:
        raise ValueError(f"{name!r} has no hyper-parameters to tune")
    best = max(range(len(tried)), key=lambda i: (tried[i][0], -i))
    order = sorted(range(len(tried)), key=lambda i: (-tried[i][0], i))
    chosen = tried[best][1]
    logger.info("%s: chose %s on validation (%s %.4f)", name, chosen, key, tried[best][0])
    return chosen, {
        "searched": len(tried),
        "chosen": asdict(chosen),
        "validation_recall": tried[best][0],
        "top": [{**asdict(tried[i][1]), key: tried[i][0]} for i in order[:5]],
    }


def rank_with(recommender: Recommender, view: SplitView, depth: int) -> Ranked:
    """Customer -> the top ``depth`` catalog items of ``recommender``, in chunks of customers."""
    ranked: Ranked = {}
    for start in range(0, len(view.customers), 512):
        customers = view.customers[start : start + 512]
        histories = view.histories[start : start + 512]
        rows = top_k(recommender.score(customers, histories), depth)
        for customer, found in zip(customers, rows, strict=True):
            ranked[customer] = [view.catalog[int(r)] for r in found]
    return ranked


def repeat_then(repeat: Ranked, other: Ranked, view: SplitView, depth: int) -> Ranked:
    """Customer -> their own past items in ``repeat``'s order, then ``other``'s items.

    Repeat purchase puts everything a customer bought before the cut first and fills the rest
    of the list with popular items; this keeps the first part and fills with ``other`` (a
    learned system), so it shows what ``other`` adds where the customer's history runs out.
    """
    combined: Ranked = {}
    for customer, history in zip(view.customers, view.histories, strict=True):
        own = {view.catalog[row] for row in history}
        ranked = [item for item in repeat[customer] if item in own]
        seen = set(ranked)
        ranked += [item for item in other[customer] if item not in seen]
        combined[customer] = ranked[:depth]
    return combined


def rank_two_tower(model: TwoTowerRecommender, view: SplitView, depth: int) -> Ranked:
    """Customer -> top ``depth`` items of the split's catalog by the two-tower scores."""
    model.eval()
    model_rows = np.array([model.rows[item] for item in view.catalog], dtype=np.int64)
    histories = [[model.rows[view.catalog[r]] for r in h] for h in view.histories]
    ranker = CatalogRanker(model.item_matrix(), model.item_ids)
    found, _ = ranker.search(model.user_matrix(histories), depth, rows=model_rows)
    return {
        customer: [model.item_ids[int(r)] for r in rows if r >= 0]
        for customer, rows in zip(view.customers, found, strict=True)
    }


def training_examples(view: SplitView, config: RecommendConfig) -> list[TrainingExample]:
    """Per customer, each of their last ``training_invoices`` invoices before the cut (but the
    first) is a target: up to ``positives_per_basket`` of its items, seeded, each an example
    whose query is the history before that invoice."""
    return [example for _, example in customer_examples(view, config)]


def purchase_exclusions(
    view: SplitView, pairs: Sequence[tuple[str, TrainingExample]]
) -> dict[str, frozenset[str]]:
    """Query text -> the items its customer bought before the split's cut: never negatives of
    that customer's examples (``pairs`` from :func:`customer_examples`).

    Examples are keyed by their query (the loop works on texts); two customers whose history
    texts happen to be identical share the union of their purchases.
    """
    train = view.split.train
    bought = {
        str(customer): frozenset(items)
        for customer, items in train.groupby("customer_id", sort=False)["item_id"]
    }
    exclusions: dict[str, set[str]] = {}
    for customer, example in pairs:
        exclusions.setdefault(example.query, set()).update(bought.get(customer, ()))
    return {query: frozenset(items) for query, items in exclusions.items()}


def customer_examples(
    view: SplitView, config: RecommendConfig
) -> list[tuple[str, TrainingExample]]:
    """:func:`training_examples` with the customer of each example."""
    rng = np.random.default_rng([config.seed, 11])
    history: dict[str, list[str]] = {}
    invoices: dict[str, list[list[str]]] = {}
    for customer, items in view.train_baskets():
        invoices.setdefault(customer, []).append(items)
    examples: list[tuple[str, TrainingExample]] = []
    for customer in sorted(invoices):
        baskets = invoices[customer]
        first_target = max(1, len(baskets) - config.training_invoices)
        history[customer] = [i for basket in baskets[:first_target] for i in basket]
        for basket in baskets[first_target:]:
            query = history_text(history[customer][-config.max_history :])
            chosen = rng.choice(len(basket), size=min(config.positives_per_basket, len(basket)))
            for position in sorted(set(chosen.tolist())):
                examples.append((customer, TrainingExample(query=query, positive=basket[position])))
            history[customer].extend(basket)
    return examples


class ModelScorer:
    """Lends the model in training to :class:`~shopaug.samplers.DynamicSampler`: query row ``i``
    is the ``i``-th example of the batch being drawn for (set by :class:`BatchSampling`)."""

    def __init__(self, model: TwoTowerRecommender, items: Sequence[str]) -> None:
        self.model = model
        self.items = list(items)
        self.queries: list[str] = []

    @torch.no_grad()
    def score(self, query_rows: np.ndarray, item_rows: np.ndarray | None) -> np.ndarray:
        queries = self.model.embed_queries([self.queries[int(r)] for r in query_rows])
        rows = range(len(self.items)) if item_rows is None else item_rows.tolist()
        items = self.model.embed_items([self.items[int(r)] for r in rows])
        return (queries @ items.T).cpu().numpy().astype(np.float64)


@dataclass(frozen=True)
class BatchSampling(NegativeSampling):
    """:class:`NegativeSampling` that tells a :class:`ModelScorer` which batch it draws for."""

    scorer: ModelScorer | None = None

    def draw(self, batch: Sequence[TrainingExample], *, seed: int, step: int) -> SampledBatch:
        if self.scorer is not None:
            self.scorer.queries = [example.query for example in batch]
        return super().draw(batch, seed=seed, step=step)


def text_neighbours(model: TwoTowerRecommender, items: Sequence[str], depth: int) -> np.ndarray:
    """``(len(items), depth)`` indices into ``items`` of each item's nearest items by text."""
    vectors = model.text_vectors[[model.rows[i] for i in items]].numpy()
    found, _ = CatalogRanker(vectors, items).search(vectors, depth + 1)
    return found[:, 1:]  # the first hit is the item itself


def negative_sampling(
    row: TwoTowerRow,
    model: TwoTowerRecommender,
    items: Sequence[str],
    counts: np.ndarray,
    batch_size: int,
    exclusions: Mapping[str, Collection[str]] | None = None,
) -> BatchSampling | None:
    """The sampler of ``row`` over the training ``items`` (``None`` for ``none``); items in
    ``exclusions[query]`` are never negatives of that query's examples."""
    name = {"text_hard": "uniform"}.get(row.sampler, row.sampler)
    if name == "none":
        return None
    n = min(row.negatives, max(1, batch_size // 4)) if name == "in_batch" else row.negatives
    scorer = ModelScorer(model, items) if name == "dynamic" else None
    settings = SamplerConfig(
        name=name,
        alpha=row.alpha,
        temperature=row.temperature,
        refresh_every=1,
        candidates=min(512, len(items)) if name == "dynamic" else None,
    )
    sampler = build_sampler(settings, n_items=len(items), counts=counts, scorer=scorer)
    return BatchSampling(
        catalog=list(items),
        sampler=sampler,
        n=n,
        log_q_correction=row.log_q,
        exclusions=exclusions,
        scorer=scorer,
    )


def with_text_hard_negatives(
    examples: list[TrainingExample],
    neighbours: np.ndarray,
    items: Sequence[str],
    *,
    n: int,
    seed: int,
    exclusions: Mapping[str, Collection[str]] | None = None,
) -> list[TrainingExample]:
    """Each example gets ``n`` of its positive's text neighbours as its own negatives, none of
    them in ``exclusions[example.query]``."""
    rng = np.random.default_rng([seed, 13])
    index = {item: row for row, item in enumerate(items)}
    out = []
    for example in examples:
        pool = neighbours[index[example.positive]]
        pool = pool[pool >= 0]
        bought = (exclusions or {}).get(example.query, ())
        if bought:
            pool = np.array([p for p in pool.tolist() if items[p] not in bought], dtype=np.int64)
        picks = rng.choice(pool, size=min(n, len(pool)), replace=False)
        out.append(replace(example, negatives=[items[int(p)] for p in picks]))
    return out


@dataclass
class TrainedRow:
    """A trained two-tower row: the model, what training cost, and its curve."""

    model: TwoTowerRecommender
    info: dict[str, Any]


def train_row(
    row: TwoTowerRow,
    build_model: Callable[[TwoTowerRow], TwoTowerRecommender],
    valid: SplitView,
    config: RecommendConfig,
    run_dir: Path,
) -> TrainedRow:
    """Train ``row`` on the validation split's training baskets, early-stopping on its baskets."""
    from shopaug.train import fit

    model = build_model(row)
    started = time.perf_counter()
    if row.sampler == "none":
        return TrainedRow(model, {"epochs": 0, "steps": 0, "seconds": 0.0})
    train_config = config.train_config()
    items = valid.catalog
    trained_items = [item for item in items if item not in valid.split.new_items]
    counts = np.array([valid.truth.popularity.get(i, 0) for i in trained_items], dtype=np.float64)
    pairs = customer_examples(valid, config)
    examples = [example for _, example in pairs]
    exclusions = purchase_exclusions(valid, pairs)
    if row.sampler == "text_hard":
        neighbours = text_neighbours(model, trained_items, depth=50)
        examples = with_text_hard_negatives(
            examples,
            neighbours,
            trained_items,
            n=row.negatives,
            seed=config.seed,
            exclusions=exclusions,
        )
    if row.sampler == "in_batch":  # every batch full, so every row has other positives
        full = len(examples) - len(examples) % train_config.batch_size
        examples = examples[: max(train_config.batch_size, full)]
    sampling = negative_sampling(
        row, model, trained_items, counts, train_config.batch_size, exclusions
    )
    settings = train_config.model_copy(update={"in_batch_negatives": row.in_batch})
    key = f"recall@{config.k}"

    def validate(current: Any) -> float:
        ranked = rank_two_tower(current, valid, config.k)
        lists = [ranked[c] for c in valid.customers]
        baskets = [valid.truth.baskets[c] for c in valid.customers]
        return float(per_customer_metrics(ranked=lists, baskets=baskets, k=config.k)[key].mean())

    result = fit(
        model,
        examples,
        settings,
        run_dir=run_dir,
        validate=validate,
        resume=False,
        show_progress=False,
        negative_sampling=sampling,
    )
    best = TwoTowerRecommender.load(result.model_dir)
    info = {
        "examples": len(examples),
        "steps": result.steps,
        "best_step": result.best_step,
        "best_validation": result.best_metric,
        "stopped_early": result.stopped_early,
        "seconds": round(time.perf_counter() - started, 1),
        "curve": [
            {"epoch": p.get("epoch"), "loss": p.get("loss"), key: p.get(settings.metric_name)}
            for p in result.curve
            if p.get(settings.metric_name) is not None
        ],
    }
    return TrainedRow(best, info)
