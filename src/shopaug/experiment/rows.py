"""One ablation row on one fold: its samples become training groups, a model trains on them
for the run's epochs (early-stopped on the fold's validation queries), and the model ranks the
validation and test queries over the whole catalog."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shopaug.augment.samples import VARIANT_TEXT_COLUMN
from shopaug.data.records import Dataset
from shopaug.experiment.config import AblationRow, RunConfig, train_settings
from shopaug.experiment.context import FoldContext, RunContext
from shopaug.experiment.examples import build_examples, pool_samples, product_text
from shopaug.train.config import TrainConfig
from shopaug.train.grouped import QueryGroup

logger = logging.getLogger(__name__)

Run = dict[str, list[tuple[str, float]]]


@dataclass
class RowResult:
    """What a trained row leaves: validation and test runs, the curve, the budget it used."""

    valid_run: Run
    test_run: Run
    curve: list[dict[str, Any]]
    seconds: float
    steps: int
    epochs: float
    best_epoch: float | None
    groups: int
    pairs: int
    model_dir: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _gain_of(source: object) -> float:
    """The judged gain written in a positive's ``source`` (``labels:gain=2``), else 1."""
    if isinstance(source, str) and source.startswith("labels:gain="):
        try:
            return float(source.split("=", 1)[1])
        except ValueError:
            return 1.0
    return 1.0


def build_groups(
    samples: pd.DataFrame,
    dataset: Dataset,
    *,
    text_fields: Sequence[str],
    known_positives: dict[str, set[str]],
    gain_weights: bool,
) -> list[QueryGroup]:
    """One :class:`QueryGroup` per query of ``samples`` (sorted by query id).

    Positives weigh their judged gain when ``gain_weights`` (a synthetic query's positive
    weighs 1). ``known_positives`` (query id -> product ids) are never negatives of the query.
    """
    texts = samples.get(VARIANT_TEXT_COLUMN)
    frame = samples.assign(_text=texts if texts is not None else None)
    groups: list[QueryGroup] = []
    for qid, group in frame.groupby("query_id", sort=True):
        positives = group[group["kind"] == "positive"]
        if positives.empty:
            continue
        negatives = group[group["kind"] == "negative"]
        positive_texts: dict[str, float] = {}
        for text, pid, source in zip(
            positives["_text"], positives["product_id"], positives["source"]
        ):
            rendered = product_text(text, pid, dataset, text_fields)
            weight = _gain_of(source) if gain_weights else 1.0
            positive_texts[rendered] = max(weight, positive_texts.get(rendered, 0.0))
        negative_texts = tuple(
            dict.fromkeys(
                product_text(t, p, dataset, text_fields)
                for t, p in zip(negatives["_text"], negatives["product_id"])
            )
        )
        known = frozenset(
            dataset.product(p).render(text_fields) for p in known_positives.get(str(qid), ())
        )
        negative_texts = tuple(
            t for t in negative_texts if t not in positive_texts and t not in known
        )
        groups.append(
            QueryGroup(
                query=str(group["query"].iloc[0]),
                positives=tuple(positive_texts),
                negatives=negative_texts,
                positive_weights=tuple(positive_texts.values()),
                known_positives=known,
            )
        )
    return groups


def train_config_for(config: RunConfig) -> TrainConfig:
    """The run's training settings (every row gets the same epochs and early stopping)."""
    return train_settings(config.train, seed=config.seed)


def _lora(train_config: TrainConfig) -> Any:
    """The LoRA adapters a row's model is built with (None: full fine-tuning)."""
    return None if train_config.lora is None else train_config.lora.settings(train_config.seed)


def train_and_rank_row(
    run: RunContext, fold: FoldContext, row: AblationRow, samples: pd.DataFrame, *, depth: int
) -> RowResult:
    """Train ``row`` on ``fold`` (query tower or full model) and rank its validation and test
    queries over the whole catalog."""
    config = run.config
    row_dir = run.run_dir / "training" / f"fold-{fold.index}" / row.name.replace(" ", "-")
    if row_dir.exists():
        shutil.rmtree(row_dir)  # a stale, unfinished row: start it over
    train_config = train_config_for(config)
    if row.trainer == "sentence-transformers":
        model, result, groups, pairs = _train_sentence_transformers(
            run, fold, samples, train_config, row_dir
        )
        item_vectors = model.encode(run.catalog_texts)
    elif config.tower == "query":
        model, result, groups, pairs = _train_query_tower(
            run, fold, row, samples, train_config, row_dir
        )
        item_vectors = model.encode_items(run.catalog_texts)
    else:
        model, result, groups, pairs = _train_full(run, fold, row, samples, train_config, row_dir)
        item_vectors = model.encode(run.catalog_texts)
    valid_run = run.rank(
        model.encode(run.query_texts(fold.valid_ids)), item_vectors, fold.valid_ids, depth=depth
    )
    test_run = run.rank(
        model.encode(run.query_texts(fold.test_ids)), item_vectors, fold.test_ids, depth=depth
    )
    for checkpoint in row_dir.rglob("checkpoints"):
        shutil.rmtree(checkpoint, ignore_errors=True)  # weights are kept once, in model/
    best_epoch = None
    if result.best_step is not None:
        best_epoch = next((p["epoch"] for p in result.curve if p["step"] == result.best_step), None)
    return RowResult(
        valid_run=valid_run,
        test_run=test_run,
        curve=list(result.curve),
        seconds=float(result.elapsed_seconds),
        steps=int(result.steps),
        epochs=float(result.curve[-1]["epoch"]) if result.curve else 0.0,
        best_epoch=best_epoch,
        groups=groups,
        pairs=pairs,
        model_dir=str(result.model_dir),
    )


def _known_positives(dataset: Dataset, query_ids: Sequence[str]) -> dict[str, set[str]]:
    return dataset.positives(query_ids=list(query_ids))


def _train_query_tower(
    run: RunContext,
    fold: FoldContext,
    row: AblationRow,
    samples: pd.DataFrame,
    train_config: TrainConfig,
    row_dir: Path,
) -> tuple[Any, Any, int, int]:
    from shopaug.models.query_tower import QueryTowerModel
    from shopaug.train import fit_groups

    config = run.config
    known = _known_positives(run.dataset, fold.train_ids)
    groups = build_groups(
        samples,
        run.dataset,
        text_fields=config.text_fields,
        known_positives=known,
        gain_weights=config.gain_weights,
    )
    model = QueryTowerModel.from_base(
        config.model,
        item_encoder=run.item_encoder(),
        item_adapter=config.item_adapter,
        lora=_lora(train_config),
    )
    model.to(run.device)
    refresh = None
    if row.dynamic:
        refresh = _dynamic_refresh(run, groups, known, train_config.seed)
    result = fit_groups(
        model,
        groups,
        train_config,
        run_dir=row_dir,
        validate=run.validator(fold) if fold.valid_ids else None,
        refresh=refresh,
        show_progress=config.show_progress,
    )
    best = QueryTowerModel.load(result.model_dir, item_encoder=run.item_encoder())
    return best, result, len(groups), sum(g.size for g in groups)


def _dynamic_refresh(
    run: RunContext, groups: list[QueryGroup], known: dict[str, set[str]], seed: int
):
    """Before each epoch: each query's negatives re-drawn from the current model's scores
    (softmax at the dynamic temperature over its top candidates), known positives excluded."""
    from shopaug.samplers import DynamicSampler

    settings = run.config.dynamic
    texts = run.catalog_texts
    row_of_text = {text: row for row, text in enumerate(texts)}

    def refresh(model: Any, epoch: int) -> list[QueryGroup]:
        item_vectors = model.encode_items(texts)
        scorer = _VectorScorer(model.encode([g.query for g in groups]), item_vectors)
        sampler = DynamicSampler(
            scorer,
            len(texts),
            temperature=settings.temperature,
            refresh_every=10**9,
            candidates=settings.candidates,
            replace=False,
        )
        exclude = [
            {row_of_text[t] for t in (*g.positives, *g.known_positives) if t in row_of_text}
            for g in groups
        ]
        drawn = sampler.sample(
            query_rows=np.arange(len(groups), dtype=np.int64),
            positive_rows=np.array(
                [row_of_text.get(g.positives[0], 0) for g in groups], dtype=np.int64
            ),
            n=settings.negatives,
            rng=np.random.default_rng([seed, epoch]),
            exclude=exclude,
        )
        return [
            QueryGroup(
                query=g.query,
                positives=g.positives,
                negatives=tuple(texts[int(i)] for i in items),
                positive_weights=g.positive_weights,
                known_positives=g.known_positives,
            )
            for g, items in zip(groups, drawn.items)
        ]

    return refresh


class _VectorScorer:
    """The :class:`~shopaug.samplers.Scorer` of fixed query and item vectors."""

    def __init__(self, queries: np.ndarray, items: np.ndarray) -> None:
        self.queries, self.items = queries, items

    def score(self, query_rows: np.ndarray, item_rows: np.ndarray | None) -> np.ndarray:
        items = self.items if item_rows is None else self.items[item_rows]
        return self.queries[query_rows] @ items.T


def _train_full(
    run: RunContext,
    fold: FoldContext,
    row: AblationRow,
    samples: pd.DataFrame,
    train_config: TrainConfig,
    row_dir: Path,
) -> tuple[Any, Any, int, int]:
    """Both towers through :func:`shopaug.train.fit` on (query, positive, negatives) groups."""
    from shopaug.models import BiEncoder
    from shopaug.train import fit

    config = run.config
    if row.dynamic:
        logger.warning("row %s: dynamic negatives need tower: query; trained without", row.name)
    examples = build_examples(
        pool_samples([samples]),
        run.dataset,
        text_fields=config.text_fields,
        negatives_per_example=config.negatives_per_example,
        seed=config.seed,
    )
    model = BiEncoder(
        None if config.model == "minilm" else config.model,
        device=run.device,
        lora=_lora(train_config),
    )
    result = fit(
        model,
        examples,
        train_config,
        run_dir=row_dir,
        validate=run.validator(fold) if fold.valid_ids else None,
        show_progress=config.show_progress,
        negative_sampling=_negative_sampling(run, fold, row),
    )
    best = BiEncoder(result.model_dir, device=run.device) if result.model_dir.exists() else model
    return best, result, len(examples), len(examples)


@dataclass
class _TrainerOutcome:
    """What :func:`_train_sentence_transformers` reports, shaped as a ``TrainResult``."""

    model_dir: Path
    curve: list[dict[str, Any]]
    elapsed_seconds: float
    steps: int
    best_step: int | None = None


def _train_sentence_transformers(
    run: RunContext,
    fold: FoldContext,
    samples: pd.DataFrame,
    train_config: TrainConfig,
    row_dir: Path,
) -> tuple[Any, _TrainerOutcome, int, int]:
    """The yardstick row: sentence-transformers' own trainer on one (query, positive,
    negative) triple per positive sample (:func:`triple_examples`), the last epoch's model."""
    from shopaug.encoders.dense import minilm_path
    from shopaug.models import BiEncoder
    from shopaug.train.st_trainer import fit_sentence_transformers

    config = run.config
    examples = triple_examples(
        run.dataset,
        samples,
        text_fields=config.text_fields,
        catalog_texts=run.catalog_texts,
        known_positives=_known_positives(run.dataset, fold.train_ids),
        seed=train_config.seed,
    )
    base = minilm_path() if config.model == "minilm" else Path(config.model)
    model_dir, cost = fit_sentence_transformers(
        base,
        examples,
        train_config,
        run_dir=row_dir,
        device=run.device,
        show_progress=config.show_progress,
    )
    outcome = _TrainerOutcome(
        model_dir=model_dir,
        curve=cost["curve"],
        elapsed_seconds=cost["seconds"],
        steps=cost["steps"],
    )
    return BiEncoder(model_dir, device=run.device), outcome, len(examples), len(examples)


def triple_examples(
    dataset: Dataset,
    samples: pd.DataFrame,
    *,
    text_fields: Sequence[str],
    catalog_texts: Sequence[str],
    known_positives: dict[str, set[str]],
    seed: int,
) -> list[Any]:
    """One (query, positive, negative) example per positive sample: the negative is one of
    the query's negative samples (its judged-irrelevant products for ``human-negatives``),
    drawn with a generator seeded by ``seed``; a query without any gets a random catalog
    product that is not one of its known positives (the sentence-transformers script needs a
    negative in every triple)."""
    from shopaug.train.config import TrainingExample

    examples = build_examples(
        samples,
        dataset,
        text_fields=text_fields,
        negatives_per_example=1,
        seed=seed,
    )
    rng = np.random.default_rng([seed, 1])
    query_ids = {str(text): str(qid) for qid, text in zip(samples["query_id"], samples["query"])}
    known_texts: dict[str, set[str]] = {}  # query text -> its known positives' texts, once
    filled = []
    for example in examples:
        if example.negatives:
            filled.append(example)
            continue
        known = known_texts.get(example.query)
        if known is None:
            known = known_texts[example.query] = {
                dataset.product(p).render(text_fields)
                for p in known_positives.get(query_ids.get(example.query, ""), ())
            }
        while True:
            text = catalog_texts[int(rng.integers(len(catalog_texts)))]
            if text not in known and text != example.positive:
                break
        filled.append(TrainingExample(example.query, example.positive, [text], example.weight))
    return filled


def _negative_sampling(run: RunContext, fold: FoldContext, row: AblationRow) -> Any:
    """The row's sampler over the catalog (popularity from the fold's training queries only),
    or None for a row without one."""
    if not row.sampler:
        return None
    from shopaug.augment.mining import popularity_counts
    from shopaug.config import from_mapping
    from shopaug.samplers import SamplerConfig, build_sampler
    from shopaug.train import NegativeSampling

    settings = from_mapping(SamplerConfig, row.sampler, section=f"{row.name}: sampler")
    counts, _ = popularity_counts(run.dataset, query_ids=fold.train_ids)
    sampler = build_sampler(settings, n_items=len(run.catalog_texts), counts=counts)
    return NegativeSampling(
        catalog=run.catalog_texts,
        sampler=sampler,
        n=row.sampled_negatives,
        log_q_correction=row.log_q_correction,
    )


def train_final_model(
    run: RunContext, row: AblationRow, samples: pd.DataFrame, *, epochs: int, out: Path
) -> None:
    """Train ``row``'s model on ``samples`` (every judged query) for ``epochs`` epochs, without
    validation, into ``out`` (the served model)."""
    everyone = FoldContext(-1, tuple(sorted(set(samples["query_id"].astype(str)))), (), ())
    train_config = train_config_for(run.config).model_copy(
        update={"epochs": epochs, "early_stopping_patience": None}
    )
    work = run.run_dir / "training" / "served"
    if row.trainer == "sentence-transformers":
        _, result, _, _ = _train_sentence_transformers(run, everyone, samples, train_config, work)
    elif run.config.tower == "query":
        _, result, _, _ = _train_query_tower(run, everyone, row, samples, train_config, work)
    else:
        _, result, _, _ = _train_full(run, everyone, row, samples, train_config, work)
    if out.exists():
        shutil.rmtree(out)
    shutil.move(str(result.model_dir), out)
    shutil.rmtree(work, ignore_errors=True)
