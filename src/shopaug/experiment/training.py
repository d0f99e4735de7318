"""Train one ablation row's bi-encoder on one fold, and score rankers on held-out queries."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shopaug.data.records import Dataset
from shopaug.eval.metrics import evaluate_run
from shopaug.index.vector import VectorIndex
from shopaug.samplers import DynamicSampler
from shopaug.train import TrainConfig, fit
from shopaug.train.config import TrainingExample

logger = logging.getLogger(__name__)
Run = dict[str, list[tuple[str, float]]]

#: Products ranked for validation: the validation queries' judged products plus this many
#: random others (validation over the whole catalog at every evaluation would dominate the time).
VALIDATION_DISTRACTORS = 1000


def dense_run(
    encoder: Any,
    dataset: Dataset,
    query_ids: Sequence[str],
    *,
    text_fields: Sequence[str],
    depth: int,
    product_rows: np.ndarray | None = None,
    item_vectors: np.ndarray | None = None,
) -> Run:
    """Rank ``product_rows`` (default: the whole catalog) for ``query_ids`` with ``encoder``."""
    rows = np.arange(len(dataset.products)) if product_rows is None else product_rows
    if item_vectors is None:
        texts = [dataset.products[r].render(text_fields) for r in rows]
        item_vectors = encoder.encode(texts)
    index = VectorIndex(item_vectors)
    queries = encoder.encode([dataset.query_by_id[q].text for q in query_ids])
    found, scores = index.search(queries, depth)
    run: Run = {}
    for qid, found_rows, found_scores in zip(query_ids, found, scores):
        run[qid] = [
            (dataset.products[int(rows[r])].id, float(s))
            for r, s in zip(found_rows, found_scores)
            if r >= 0
        ]
    return run


def validation_metric(
    dataset: Dataset, query_ids: Sequence[str], *, text_fields: Sequence[str], seed: int
):
    """NDCG@10 on validation queries over their judged products plus random distractors."""
    qrels = dataset.qrels(query_ids=query_ids)
    judged = {pid for judgments in qrels.values() for pid in judgments}
    index = dataset.product_index
    rng = np.random.default_rng(seed)
    others = rng.permutation(len(dataset.products))[: VALIDATION_DISTRACTORS + len(judged)]
    rows = np.array(
        sorted({index[p] for p in judged} | set(others[:VALIDATION_DISTRACTORS].tolist()))
    )
    scored = [q for q in query_ids if any(g > 0 for g in qrels.get(q, {}).values())]

    def validate(model: Any) -> float:
        run = dense_run(
            model, dataset, scored, text_fields=text_fields, depth=10, product_rows=rows
        )
        return float(
            np.mean(evaluate_run(run, qrels, metrics=["ndcg@10"], query_ids=scored)["ndcg@10"])
        )

    return validate


class ModelScorer:
    """The :class:`~shopaug.samplers.Scorer` of the dynamic sampler: cosine scores of the
    current model between train queries (rows of ``query_texts``) and catalog items."""

    def __init__(self, model: Any, query_texts: Sequence[str], item_texts: Sequence[str]) -> None:
        self.queries = model.encode(list(query_texts))  # (n_queries, dim)
        self.items = model.encode(list(item_texts))  # (n_items, dim)

    def score(self, query_rows: np.ndarray, item_rows: np.ndarray | None) -> np.ndarray:
        items = self.items if item_rows is None else self.items[item_rows]
        return self.queries[query_rows] @ items.T


@dataclass
class DynamicRound:
    temperature: float
    candidates: int | None


def dynamic_examples(
    model: Any,
    dataset: Dataset,
    examples_by_query: list[tuple[str, str, str]],
    known_positives: dict[str, set[str]],
    *,
    text_fields: Sequence[str],
    negatives_per_example: int,
    settings: DynamicRound,
    seed: int,
) -> list[TrainingExample]:
    """Re-draw every group's negatives from the current model's score distribution."""
    query_ids = sorted({q for q, _, _ in examples_by_query})
    row_of = {q: i for i, q in enumerate(query_ids)}
    texts = dataset.product_texts(text_fields)
    scorer = ModelScorer(model, [dataset.query_by_id[q].text for q in query_ids], texts)
    sampler = DynamicSampler(
        scorer,
        len(texts),
        temperature=settings.temperature,
        refresh_every=10**9,
        candidates=settings.candidates,
        replace=False,
    )
    index = dataset.product_index
    drawn = sampler.sample(
        query_rows=np.array([row_of[q] for q, _, _ in examples_by_query], dtype=np.int64),
        positive_rows=np.array([index[p] for _, p, _ in examples_by_query], dtype=np.int64),
        n=negatives_per_example,
        rng=np.random.default_rng(seed),
        exclude=[{index[p] for p in known_positives.get(q, ())} for q, _, _ in examples_by_query],
    )
    return [
        TrainingExample(
            query=dataset.query_by_id[q].text,
            positive=positive_text,
            negatives=[texts[int(i)] for i in items],
        )
        for (q, _, positive_text), items in zip(examples_by_query, drawn.items)
    ]


def train_row(
    dataset: Dataset,
    examples: list[TrainingExample],
    train_config: TrainConfig,
    *,
    model_path: str,
    run_dir: Path,
    validate: Any,
    show_progress: bool,
    dynamic: tuple[DynamicRound, int, list[tuple[str, str, str]], dict[str, set[str]]]
    | None = None,
    text_fields: Sequence[str] = (),
    negatives_per_example: int = 3,
) -> tuple[Any, list[dict[str, Any]], float]:
    """Fine-tune a bi-encoder from ``model_path``; returns (best model, curve, seconds).

    With ``dynamic`` = (settings, rounds, groups, positives), the step budget is split over
    ``rounds`` rounds and before each round the negatives are re-drawn from the model.
    """
    from shopaug.models import BiEncoder

    model = BiEncoder(None if model_path == "minilm" else model_path)
    curve: list[dict[str, Any]] = []
    seconds = 0.0
    if dynamic is None:
        result = fit(
            model,
            examples,
            train_config,
            run_dir=run_dir,
            validate=validate,
            show_progress=show_progress,
        )
        curve, seconds = list(result.curve), float(result.elapsed_seconds)
    else:
        settings, rounds, groups, positives = dynamic
        budget = train_config.max_steps or 1
        per_round = max(1, budget // rounds)
        for number in range(rounds):
            round_examples = dynamic_examples(
                model,
                dataset,
                groups,
                positives,
                text_fields=text_fields,
                negatives_per_example=negatives_per_example,
                settings=settings,
                seed=train_config.seed + number,
            )
            config = train_config.model_copy(update={"max_steps": per_round})
            result = fit(
                model,
                round_examples,
                config,
                run_dir=run_dir / f"round-{number}",
                validate=validate,
                show_progress=show_progress,
            )
            offset = number * per_round
            curve += [{**point, "step": point["step"] + offset} for point in result.curve]
            seconds += float(result.elapsed_seconds)
            model = BiEncoder(run_dir / f"round-{number}" / "model")
        return model, curve, seconds
    best = run_dir / "model"
    return (BiEncoder(best) if best.exists() else model), curve, seconds
