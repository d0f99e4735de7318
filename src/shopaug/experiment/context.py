"""What every stage of ``shopaug run`` shares: the run (data, config, cache, catalog vectors)
and one fold (its training, validation and test queries)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shopaug.data import Dataset
from shopaug.eval.metrics import evaluate_run
from shopaug.eval.pipeline import HEADLINE_METRICS
from shopaug.experiment.config import RunConfig
from shopaug.experiment.stages import Stages
from shopaug.retrieval.ranking import CatalogRanker

logger = logging.getLogger(__name__)

Run = dict[str, list[tuple[str, float]]]
#: metric -> query id -> value
PerQuery = dict[str, dict[str, float]]


@dataclass(frozen=True)
class FoldContext:
    """One fold: its training queries, and the validation and test queries that can score
    (those with at least one relevant product).

    Validation queries are carved from the fold's training side; test queries are the fold's
    held-out fifth and are read only to report.
    """

    index: int
    train_ids: tuple[str, ...]
    valid_ids: tuple[str, ...]
    test_ids: tuple[str, ...]


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``."""
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


@dataclass
class RunContext:
    """The data, config and cache of one run, and the catalog's vectors under the base model
    (encoded once, through the embedding cache)."""

    dataset: Dataset
    config: RunConfig
    stages: Stages
    run_dir: Path
    device: str = "cpu"
    _item_encoder: Any = field(default=None, repr=False)
    _base_vectors: np.ndarray | None = field(default=None, repr=False)
    _base_ranker: CatalogRanker | None = field(default=None, repr=False)
    _bm25: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.qrels = self.dataset.qrels()
        self.catalog_texts = self.dataset.product_texts(self.config.text_fields)
        self.product_ids = [p.id for p in self.dataset.products]

    def scored(self, query_ids: Sequence[str]) -> tuple[str, ...]:
        """The queries of ``query_ids`` that have a relevant product (others cannot score)."""
        return tuple(q for q in query_ids if any(g > 0 for g in self.qrels.get(q, {}).values()))

    def query_texts(self, query_ids: Sequence[str]) -> list[str]:
        return [self.dataset.query_by_id[q].text for q in query_ids]

    def item_encoder(self) -> Any:
        """The frozen base model through the embedding cache (one per run)."""
        if self._item_encoder is None:
            from shopaug.models.query_tower import cached_item_encoder

            self._item_encoder = cached_item_encoder(self.config.model)
        return self._item_encoder

    def bm25(self) -> Any:
        """BM25 over the catalog texts (:class:`~shopaug.retrieval.retrievers.BM25Retriever`),
        built once per run and shared by the baselines, fusion and the reranker."""
        if self._bm25 is None:
            from shopaug.retrieval.retrievers import BM25Retriever

            self._bm25 = BM25Retriever(self.catalog_texts)
        return self._bm25

    def bm25_run(self, query_ids: Sequence[str], depth: int) -> Run:
        """BM25's top ``depth`` of ``query_ids``."""
        from shopaug.retrieval.fusion import bm25_run

        ids = list(query_ids)
        return bm25_run(
            self.bm25(), self.product_ids, dict(zip(ids, self.query_texts(ids))), depth=depth
        )

    def base_vectors(self) -> np.ndarray:
        """The catalog under the base model ``(n_products, dim)``, encoded once."""
        if self._base_vectors is None:
            self._base_vectors = self.item_encoder().encode(
                self.catalog_texts, show_progress=self.config.show_progress
            )
        return self._base_vectors

    def rank(
        self,
        query_vectors: np.ndarray,
        item_vectors: np.ndarray,
        ids: Sequence[str],
        *,
        depth: int | None = None,
    ) -> Run:
        """Rank the whole catalog for ``ids`` (default depth ``config.depth``)."""
        if item_vectors is self._base_vectors:
            if self._base_ranker is None:
                self._base_ranker = CatalogRanker(item_vectors, self.product_ids)
            ranker = self._base_ranker
        else:
            ranker = CatalogRanker(item_vectors, self.product_ids)
        return ranker.run(list(ids), query_vectors, depth=depth or self.config.depth)

    def per_query(self, run: Run, query_ids: Sequence[str]) -> PerQuery:
        """Headline metrics of ``run`` per query (gains from the judgments)."""
        ids = list(query_ids)
        values = evaluate_run(run, self.qrels, metrics=HEADLINE_METRICS, query_ids=ids)
        return {m: dict(zip(ids, map(float, values[m]))) for m in HEADLINE_METRICS}

    def mean_ndcg(self, run: Run, query_ids: Sequence[str]) -> float:
        ids = list(query_ids)
        if not ids:
            return 0.0
        values = evaluate_run(run, self.qrels, metrics=["ndcg@10"], query_ids=ids)
        return float(np.mean(values["ndcg@10"]))

    def validator(self, fold: FoldContext) -> Callable[[Any], float]:
        """NDCG@10 of a model on ``fold``'s validation queries over the whole catalog.

        A query tower ranks the cached base vectors; a full model re-encodes the validation
        queries' judged products plus 1,000 random others (the whole catalog at every epoch
        would dominate its time)."""
        ids = list(fold.valid_ids)

        def validate(model: Any) -> float:
            query_vectors = model.encode(self.query_texts(ids))
            if hasattr(model, "encode_items"):  # a query tower: the catalog is cached
                items = model.encode_items(self.catalog_texts)
                return self.mean_ndcg(self.rank(query_vectors, items, ids), ids)
            rows = self._validation_rows(ids)
            item_vectors = model.encode([self.catalog_texts[r] for r in rows])
            ranker = CatalogRanker(item_vectors, [self.product_ids[r] for r in rows])
            return self.mean_ndcg(ranker.run(ids, query_vectors, depth=10), ids)

        return validate

    def _validation_rows(self, ids: Sequence[str]) -> list[int]:
        index = self.dataset.product_index
        judged = {index[p] for q in ids for p in self.qrels.get(q, {})}
        rng = np.random.default_rng(self.config.seed)
        others = rng.permutation(len(self.product_ids))[:1000].tolist()
        return sorted(judged | set(others))
