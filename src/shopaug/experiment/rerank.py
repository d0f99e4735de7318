"""A reranker per fold, trained on the fold's training queries, reranking the top ``top_k`` of a
first-stage run: a cross-encoder (``reranker.kind: cross-encoder``) or LambdaMART over cheap
candidate features (``lambdamart``). Whether it is served is decided on validation queries."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shopaug.experiment.context import FoldContext, RunContext
from shopaug.experiment.examples import build_examples, pool_samples

logger = logging.getLogger(__name__)

Run = dict[str, list[tuple[str, float]]]


def train_reranker(run: RunContext, fold: FoldContext, samples: Sequence[pd.DataFrame]) -> Any:
    """A :class:`~shopaug.models.CrossEncoderReranker` trained for ``reranker.epochs`` epochs on
    (query, positive, negatives) groups of the fold's training samples (judged positives, at
    most ``reranker.max_positives_per_query`` per query, highest gain first); with
    ``reranker.lora``, LoRA adapters and the head train instead of every weight."""
    from shopaug.experiment.config import lora_settings
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
    lora = lora_settings(settings.lora, section="reranker.lora")
    reranker = CrossEncoderReranker(
        seed=run.config.seed,
        device=run.device,
        lora=None if lora is None else lora.settings(run.config.seed),
    )
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


def _hybrid_candidates(run: RunContext, query_ids: Sequence[str], depth: int) -> Run:
    """The zero-shot hybrid's (BM25 + base encoder, RRF) top ``depth`` of ``query_ids``: the
    candidate lists the LambdaMART reranker learns on (no trained model ranks its own training
    queries)."""
    from shopaug.retrieval.fusion import rrf_fuse

    ids = list(query_ids)
    dense = run.rank(run.item_encoder().encode(run.query_texts(ids)), run.base_vectors(), ids)
    lexical = run.bm25_run(ids, depth)
    return rrf_fuse([dense, lexical], depth=depth, rrf_k=run.config.fusion.rrf_k)


def _feature_builder(run: RunContext) -> Any:
    from shopaug.retrieval.rerank_features import RerankFeatures

    builder = getattr(run, "_rerank_features", None)
    if builder is None:
        builder = RerankFeatures(
            run.dataset.products, run.catalog_texts, run.base_vectors(), bm25=run.bm25().index
        )
        run._rerank_features = builder  # type: ignore[attr-defined]
    return builder


def fit_lambdamart(run: RunContext, query_ids: Sequence[str]) -> Any:
    """A :class:`~shopaug.retrieval.reranking.FeatureReranker` trained on ``query_ids``: graded
    judgments of the zero-shot hybrid's top ``top_k`` (unjudged products count as grade 0) and
    the category prior of the same queries, each query's own judgments left out of its
    features."""
    from shopaug.models.ltr_reranker import LambdaMartReranker, LambdaMartSettings
    from shopaug.retrieval.rerank_features import FEATURE_NAMES, ClassPrior
    from shopaug.retrieval.reranking import FeatureReranker

    settings = run.config.reranker
    top_k = settings.top_k
    builder = _feature_builder(run)
    train_ids = list(run.scored(query_ids))
    candidates = _hybrid_candidates(run, train_ids, top_k)
    prior = ClassPrior(
        (run.dataset.query_by_id[qid].text, builder.leaf(pid), float(gain))
        for qid in train_ids
        for pid, gain in run.qrels.get(qid, {}).items()
        if gain > 0 and pid in run.dataset.product_index
    )
    vectors = dict(zip(train_ids, run.item_encoder().encode(run.query_texts(train_ids))))
    blocks: list[np.ndarray] = []
    gains: list[int] = []
    groups: list[int] = []
    for qid in train_ids:
        products = [pid for pid, _ in candidates.get(qid, [])[:top_k]]
        if not products:
            continue
        text = run.dataset.query_by_id[qid].text
        blocks.append(builder.matrix(text, vectors[qid], products, prior=prior, leave_out=True))
        judged = run.qrels.get(qid, {})
        gains.extend(int(max(0, min(2, judged.get(pid, 0)))) for pid in products)
        groups.append(len(products))
    model = LambdaMartReranker(
        LambdaMartSettings(trees=settings.trees, leaves=settings.leaves),
        feature_names=FEATURE_NAMES,
        seed=run.config.seed,
    )
    model.fit(np.vstack(blocks), np.array(gains), groups)
    logger.info("lambdamart reranker trained on %d queries, %d pairs", len(groups), len(gains))
    return FeatureReranker(model, prior, top_k, builder)


def lambdamart_reranking(
    run: RunContext, fold: FoldContext, first_stage: tuple[Run, Run]
) -> tuple[Run, Run]:
    """LambdaMART trained on the fold's training queries (:func:`fit_lambdamart`) reranking
    the top ``top_k`` of ``first_stage``'s (validation, test) runs."""
    reranker = fit_lambdamart(run, fold.train_ids)
    encoder = run.item_encoder()

    def rerank(first: Run) -> Run:
        ids = list(first)
        query_vectors = dict(zip(ids, encoder.encode(run.query_texts(ids))))
        return {
            qid: reranker.rerank(run.dataset.query_by_id[qid].text, query_vectors[qid], ranked)
            for qid, ranked in first.items()
        }

    valid_run, test_run = first_stage
    return rerank(valid_run), rerank(test_run)


def save_served_reranker(
    run: RunContext, directory: Path, *, with_encoder: bool = False
) -> dict[str, Any]:
    """LambdaMART trained on every judged query, written to ``directory`` for the service;
    ``with_encoder`` (the served first stage is a fine-tuned model) also writes the base
    encoder its features use (:data:`~shopaug.retrieval.reranking.FEATURES_ENCODER_DIR`)."""
    from shopaug.models.bi_encoder import BiEncoder
    from shopaug.retrieval.reranking import FEATURES_ENCODER_DIR, save_feature_reranker

    all_ids = [q.id for q in run.dataset.queries]
    reranker = fit_lambdamart(run, all_ids)
    save_feature_reranker(directory, reranker.model, reranker.prior, reranker.top_k)
    info: dict[str, Any] = {
        "dir": str(directory),
        "queries": len(run.scored(all_ids)),
        "top_k": reranker.top_k,
    }
    if with_encoder:
        base = run.config.model
        BiEncoder(None if base == "minilm" else base).save(directory / FEATURES_ENCODER_DIR)
        info["features_encoder"] = f"{base} (base, in {FEATURES_ENCODER_DIR}/)"
    return info
