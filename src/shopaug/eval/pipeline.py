"""Evaluate a ranker on a data set with query-level folds: runs, per-fold metrics, TREC files."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from shopaug.data.records import Dataset
from shopaug.data.splits import Fold
from shopaug.eval.metrics import evaluate_run
from shopaug.eval.significance import fold_summary, paired_test
from shopaug.retrieval.retrievers import Retriever

logger = logging.getLogger(__name__)

HEADLINE_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@100")
Run = dict[str, list[tuple[str, float]]]


def retrieve_run(
    dataset: Dataset,
    retriever: Retriever,
    query_ids: Sequence[str],
    *,
    depth: int = 100,
    batch_size: int = 256,
    show_progress: bool = False,
) -> Run:
    """Query id -> [(product id, score)] for the top ``depth`` of the whole catalog."""
    run: Run = {}
    ids = list(query_ids)
    batches = range(0, len(ids), batch_size)
    for start in tqdm(batches, desc="retrieve", disable=not show_progress, unit="batch"):
        chunk = ids[start : start + batch_size]
        texts = [dataset.query_by_id[qid].text for qid in chunk]
        rows, scores = retriever.search(texts, depth)
        for qid, row_list, score_list in zip(chunk, rows, scores):
            run[qid] = [
                (dataset.products[int(row)].id, float(score))
                for row, score in zip(row_list, score_list)
                if row >= 0
            ]
    return run


@dataclass
class FoldedMetrics:
    """Per-query values of one system, and their per-fold summaries."""

    per_query: dict[str, dict[str, float]]  # metric -> query id -> value
    summary: dict[str, dict[str, object]]  # metric -> {"mean", "ci95", "per_fold"}


def evaluate_folds(
    run: Mapping[str, Sequence[tuple[str, float]]],
    qrels: Mapping[str, Mapping[str, int]],
    folds: Sequence[Fold],
    *,
    metrics: Sequence[str] = HEADLINE_METRICS,
    judged_only: bool = False,
) -> FoldedMetrics:
    """Score each fold's test queries; the mean over folds with a 95 % interval."""
    per_query: dict[str, dict[str, float]] = {m: {} for m in metrics}
    per_fold: dict[str, list[float]] = {m: [] for m in metrics}
    for fold in folds:
        test = [qid for qid in fold.test if qid in qrels]
        values = evaluate_run(run, qrels, metrics=metrics, judged_only=judged_only, query_ids=test)
        for metric in metrics:
            per_fold[metric].append(float(np.mean(values[metric])) if len(test) else 0.0)
            per_query[metric].update(zip(test, map(float, values[metric])))
    summary = {metric: fold_summary(per_fold[metric]) for metric in metrics}
    return FoldedMetrics(per_query=per_query, summary=summary)


def compare(
    system: FoldedMetrics, baseline: FoldedMetrics, metric: str = "ndcg@10"
) -> dict[str, float | str]:
    """Paired test over the queries both systems were scored on."""
    common = sorted(set(system.per_query[metric]) & set(baseline.per_query[metric]))
    a = np.array([system.per_query[metric][q] for q in common])
    b = np.array([baseline.per_query[metric][q] for q in common])
    result = paired_test(a, b)
    return {
        "metric": metric,
        "queries": len(common),
        "mean_difference": float(result.mean_difference),
        "p_value": float(result.p_value),
        "test": str(result.test),
    }
