"""One fold of wands-subset as the query-side training benchmarks use it.

The experiment's own split (``shopaug.data.kfold_queries`` over every query, 5 folds, seed 0;
``validation_split`` of the fold's training side), the training groups of the experiment's
judged sources (one :class:`~shopaug.train.grouped.QueryGroup` per training query: its judged
positives weighted by gain, its judged-irrelevant products as negatives), and NDCG@10 of a
model's query vectors against the frozen MiniLM catalog vectors (through the embedding cache),
over the whole catalog. ``benchmarks/query_tower.py``, ``privacy.py`` and ``lora.py`` share it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shopaug.data import kfold_queries, load_dataset, validation_split
from shopaug.eval.metrics import evaluate_run
from shopaug.models.query_tower import QueryTowerModel
from shopaug.retrieval.ranking import CatalogRanker
from shopaug.train.grouped import QueryGroup


@dataclass
class QueryTowerFold:
    """A fold's data, groups, base model and catalog ranker.

    Attributes:
        index: The fold.
        dataset: wands-subset.
        qrels: Query id -> product id -> gain.
        train_ids: The fold's training queries (validation ones removed).
        valid: Validation queries with at least one relevant product.
        test: The fold's test queries with at least one relevant product.
        groups: One group per training query with a relevant product.
        base: Zero-shot MiniLM as a query tower (its item encoder is the frozen catalog side).
        ranker: The whole catalog's base vectors.
    """

    index: int
    dataset: Any
    qrels: dict[str, dict[str, float]]
    train_ids: list[str]
    valid: list[str]
    test: list[str]
    groups: list[QueryGroup]
    base: QueryTowerModel
    ranker: CatalogRanker

    def query_texts(self, ids: Sequence[str]) -> list[str]:
        return [self.dataset.query_by_id[q].text for q in ids]

    def ndcg(self, model: Any, ids: Sequence[str]) -> float:
        """Mean NDCG@10 of ``model.encode``'s query vectors over ``ids``."""
        run = self.ranker.run(list(ids), model.encode(self.query_texts(ids)), depth=100)
        scores = evaluate_run(run, self.qrels, metrics=["ndcg@10"], query_ids=list(ids))
        return float(np.mean(scores["ndcg@10"]))

    def tower(self, **kwargs: Any) -> QueryTowerModel:
        """A fresh MiniLM query tower over the same frozen catalog side."""
        return QueryTowerModel.from_base("minilm", item_encoder=self.base.item_encoder, **kwargs)


def query_tower_fold(fold: int = 0, *, validation_fraction: float = 0.15) -> QueryTowerFold:
    """Set up ``fold`` of wands-subset (5 folds, seed 0, as the ``full`` profile)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dataset = load_dataset("wands-subset")
    qrels = dataset.qrels()
    split = kfold_queries([q.id for q in dataset.queries], n_folds=5, seed=0)[fold]
    train_ids, valid_ids = validation_split(split.train, fraction=validation_fraction, seed=0)

    def scored(ids: Sequence[str]) -> list[str]:
        return [q for q in ids if any(g > 0 for g in qrels.get(q, {}).values())]

    groups = []
    for qid in train_ids:
        judged = qrels.get(qid, {})
        positives = sorted(p for p, g in judged.items() if g > 0)
        if positives:
            groups.append(
                QueryGroup(
                    dataset.query_by_id[qid].text,
                    tuple(dataset.product(p).render() for p in positives),
                    tuple(dataset.product(p).render() for p, g in judged.items() if g == 0),
                    tuple(float(judged[p]) for p in positives),
                )
            )
    base = QueryTowerModel.from_base("minilm")
    ranker = CatalogRanker(
        base.encode_items(dataset.product_texts()), [p.id for p in dataset.products]
    )
    return QueryTowerFold(
        index=fold,
        dataset=dataset,
        qrels=qrels,
        train_ids=list(train_ids),
        valid=scored(valid_ids),
        test=scored(split.test),
        groups=groups,
        base=base,
        ranker=ranker,
    )
