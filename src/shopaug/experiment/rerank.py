"""A cross-encoder reranker per fold, trained on the fold's training queries, reranking the top
``top_k`` of a first-stage run. Whether it is served is decided on validation queries."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from typing import Any

import pandas as pd

from shopaug.experiment.context import FoldContext, RunContext
from shopaug.experiment.examples import build_examples, pool_samples

logger = logging.getLogger(__name__)

Run = dict[str, list[tuple[str, float]]]


def train_reranker(run: RunContext, fold: FoldContext, samples: Sequence[pd.DataFrame]) -> Any:
    """A :class:`~shopaug.models.CrossEncoderReranker` trained for ``reranker.epochs`` epochs on
    (query, positive, negatives) groups of the fold's training samples (judged positives, at
    most ``reranker.max_positives_per_query`` per query, highest gain first)."""
    from shopaug.models import CrossEncoderReranker
    from shopaug.train import TrainConfig, fit

    settings = run.config.reranker
    pooled = pool_samples(list(samples))
    positives = pooled[pooled["kind"] == "positive"]
    capped = (
        positives.assign(_gain=positives["source"].astype(str).str.extract(r"gain=(\d+)")[0])
        .sort_values(["query_id", "_gain", "product_id"], ascending=[True, False, True])
        .groupby("query_id", sort=True)
        .head(settings.max_positives_per_query)
        .drop(columns="_gain")
    )
    pooled = pd.concat([capped, pooled[pooled["kind"] == "negative"]], ignore_index=True)
    examples = build_examples(
        pool_samples([pooled]),
        run.dataset,
        text_fields=run.config.text_fields,
        negatives_per_example=settings.negatives_per_example,
        seed=run.config.seed,
    )
    reranker = CrossEncoderReranker(seed=run.config.seed, device=run.device)
    train_config = TrainConfig(
        seed=run.config.seed,
        batch_size=settings.batch_size,
        epochs=settings.epochs,
        lr=settings.lr,
        loss="infonce",
        temperature=1.0,
        in_batch_negatives=False,
    )
    rerank_dir = run.run_dir / "training" / f"fold-{fold.index}" / "reranker"
    if rerank_dir.exists():
        shutil.rmtree(rerank_dir)
    fit(
        reranker, examples, train_config, run_dir=rerank_dir, show_progress=run.config.show_progress
    )
    shutil.rmtree(rerank_dir / "checkpoints", ignore_errors=True)
    return reranker


def rerank_run(run: RunContext, reranker: Any, first_stage: Run) -> Run:
    """``first_stage`` with its top ``reranker.top_k`` of each query reordered by the reranker."""
    top_k = run.config.reranker.top_k
    reranked: Run = {}
    for qid, ranked in first_stage.items():
        head = ranked[:top_k]
        candidates = [
            (pid, run.dataset.product(pid).render(run.config.text_fields)) for pid, _ in head
        ]
        top = reranker.rerank(run.dataset.query_by_id[qid].text, candidates, top_k=top_k)
        reranked[qid] = [(pid, float(s)) for pid, s in top] + ranked[top_k:]
    return reranked
