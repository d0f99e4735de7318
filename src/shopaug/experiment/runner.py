"""``shopaug run``: data -> augment -> train -> evaluate -> report, every stage cached.

Stages are cached by content hash under ``RUN_DIR/cache``: a rerun with the same config and data
reuses samples and fold results; changing a setting recomputes only what depends on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from shopaug.augment.pipeline import augment
from shopaug.augment.samples import read_samples, write_samples
from shopaug.config import to_mapping
from shopaug.data import Dataset, kfold_queries, load_dataset, validation_split, write_folds
from shopaug.eval.metrics import evaluate_run
from shopaug.eval.pipeline import HEADLINE_METRICS, FoldedMetrics, retrieve_run
from shopaug.eval.significance import fold_summary, paired_test
from shopaug.experiment.config import AblationRow, RunConfig
from shopaug.experiment.examples import build_examples, pool_samples
from shopaug.experiment.training import (
    DynamicRound,
    dense_run,
    train_row,
    validation_metric,
)
from shopaug.manifest import prepare_run_dir, write_json, write_manifest
from shopaug.retrieval import RetrieverConfig, build_retriever
from shopaug.train import TrainConfig

logger = logging.getLogger(__name__)
Run = dict[str, list[tuple[str, float]]]


def content_hash(*parts: Any) -> str:
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


class Stages:
    """Cached stage results of one run directory."""

    def __init__(self, run_dir: Path, data_key: str) -> None:
        self.root = run_dir / "cache"
        self.data_key = data_key
        self.root.mkdir(parents=True, exist_ok=True)

    def samples_key(self, method: str, train_ids: list[str], config: RunConfig) -> str:
        """Content hash of everything one method's samples depend on."""
        return content_hash(
            "samples",
            self.data_key,
            method,
            train_ids,
            config.augment,
            config.text_fields,
            config.seed,
            config.model,
        )

    def samples(
        self, dataset: Dataset, method: str, train_ids: list[str], config: RunConfig
    ) -> pd.DataFrame:
        key = self.samples_key(method, train_ids, config)
        path = self.root / "samples" / f"{method}-{key}.parquet"
        if path.exists():
            return read_samples(path)
        augment_config = config.augment_config
        augment_config.mining = {"text_fields": config.text_fields, **augment_config.mining}
        frame, summary = augment(
            dataset,
            method,
            train_ids,
            config=augment_config,
            seed=config.seed,
            show_progress=config.show_progress,
        )
        write_samples(frame, path)
        write_json(path.with_suffix(".summary.json"), summary)
        return frame

    def result_path(self, *parts: Any) -> Path:
        return self.root / "results" / f"{content_hash(self.data_key, *parts)}.json"


def _per_query(run: Run, qrels: dict, query_ids: list[str]) -> dict[str, dict[str, float]]:
    values = evaluate_run(run, qrels, metrics=HEADLINE_METRICS, query_ids=query_ids)
    return {m: dict(zip(query_ids, map(float, values[m]))) for m in HEADLINE_METRICS}


def _fold_queries(qrels: dict, ids: tuple[str, ...]) -> list[str]:
    return [q for q in ids if any(g > 0 for g in qrels.get(q, {}).values())]


def run_experiment(config: RunConfig, out: str | Path, *, command: str = "") -> dict[str, Any]:
    """Run the whole pipeline into ``out``; returns the metrics.json payload."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    run_dir = prepare_run_dir(out)
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(_config_mapping(config), sort_keys=False), "utf-8"
    )
    dataset = load_dataset(
        config.data, data_dir=config.data_dir, products_path=config.products, seed=config.seed
    )
    data_key = content_hash(dataset.name, dataset.checksums or dataset.summary())
    stages = Stages(run_dir, data_key)
    qrels = dataset.qrels()
    folds = kfold_queries([q.id for q in dataset.queries], n_folds=config.folds, seed=config.seed)
    write_folds(folds, run_dir / "folds.json", seed=config.seed)
    trained_folds = folds[: config.train_folds or len(folds)]
    timings["load"] = time.perf_counter() - started

    # Baselines in the same run: BM25 and the zero-shot bi-encoder.
    start = time.perf_counter()
    baselines: dict[str, dict[str, dict[str, float]]] = {}
    all_ids = [q.id for q in dataset.queries]
    for name, kind in (("bm25", "bm25"), ("zero-shot", "dense")):
        retriever = build_retriever(
            dataset,
            RetrieverConfig(
                kind=kind,
                model=config.model,
                text_fields=config.text_fields,
                show_progress=config.show_progress,
            ),
        )
        run = retrieve_run(dataset, retriever, all_ids, depth=config.depth)
        test_ids = [q for f in trained_folds for q in _fold_queries(qrels, f.test)]
        baselines[name] = _per_query(run, qrels, test_ids)
    timings["baselines"] = time.perf_counter() - start

    rows: dict[str, dict[str, dict[str, float]]] = {
        row.name: {m: {} for m in HEADLINE_METRICS} for row in config.ablation
    }
    curves: dict[str, list[dict[str, Any]]] = {}
    train_seconds: dict[str, list[float]] = {row.name: [] for row in config.ablation}
    best_models: dict[tuple[str, int], Path] = {}
    start = time.perf_counter()
    for fold in trained_folds:
        train_ids, valid_ids = validation_split(
            fold.train, fraction=config.validation_fraction, seed=config.seed
        )
        test_ids = _fold_queries(qrels, fold.test)
        samples = {m: stages.samples(dataset, m, train_ids, config) for m in config.methods()}
        validate = validation_metric(
            dataset, valid_ids, text_fields=config.text_fields, seed=config.seed
        )
        for row in config.ablation:
            outcome = _train_and_score(
                dataset,
                config,
                stages,
                fold.index,
                row,
                samples,
                train_ids,
                test_ids,
                validate,
                run_dir,
                best_models,
            )
            for metric, values in outcome["per_query"].items():
                rows[row.name][metric].update(values)
            train_seconds[row.name].append(outcome["seconds"])
            if fold.index == trained_folds[0].index:
                curves[row.name] = outcome["curve"]
        logger.info("fold %d done", fold.index)
    timings["ablation"] = time.perf_counter() - start

    fold_tests = [_fold_queries(qrels, f.test) for f in trained_folds]
    systems: dict[str, dict[str, dict[str, float]]] = {**baselines, **rows}
    best_row = max(rows, key=lambda name: np.mean(list(rows[name]["ndcg@10"].values())))

    if config.reranker.enabled:
        start = time.perf_counter()
        systems["reranker"] = _rerank(
            dataset, config, stages, trained_folds, best_row, best_models, run_dir
        )
        timings["reranker"] = time.perf_counter() - start

    summaries = {name: _summaries(values, fold_tests) for name, values in systems.items()}
    ablation = []
    for name, values in systems.items():
        entry: dict[str, Any] = {
            "name": name,
            "metrics": summaries[name],
            "train_seconds_per_fold": (
                float(np.mean(train_seconds[name])) if train_seconds.get(name) else None
            ),
        }
        for baseline in ("zero-shot", "bm25"):
            key = f"p_value_vs_{baseline.replace('-', '_')}"
            entry[key] = None if name == baseline else _p_value(values, systems[baseline])
        ablation.append(entry)

    # The served model: the best row's model of the first trained fold.
    model_dir = run_dir / "model"
    source = best_models.get((best_row, trained_folds[0].index))
    if source is not None and source.exists():
        if model_dir.exists():
            shutil.rmtree(model_dir)
        shutil.copytree(source, model_dir)

    _drop_unused_models(run_dir, best_row)
    segments = _segments(dataset, systems, best_row)
    result: dict[str, Any] = {
        "dataset": dataset.name,
        "retriever": f"bi-encoder ({best_row})",
        "folds": config.folds,
        "trained_folds": len(trained_folds),
        "metrics": summaries[best_row],
        "best_row": best_row,
        "ablation": ablation,
        "segments": segments,
        "curves": curves,
    }
    write_json(run_dir / "metrics.json", result)
    timings["total"] = time.perf_counter() - started
    write_manifest(
        run_dir,
        command=command or "shopaug run",
        config=_config_mapping(config),
        data={"name": dataset.name, "checksums": dataset.checksums, **dataset.summary()},
        seeds={"run": config.seed, "folds": config.seed},
        timings=timings,
        metrics={name: s["ndcg@10"]["mean"] for name, s in summaries.items()},
        models={"served": str(model_dir) if model_dir.exists() else "", "base": config.model},
    )
    _render_report(result, run_dir)
    return result


def _drop_unused_models(run_dir: Path, best_row: str) -> None:
    """Keep the best row's fold models (the reranker and the served model come from them);
    other rows' weights (90 MB each) go: their metrics are cached."""
    keep = best_row.replace(" ", "-")
    for model in (run_dir / "training").glob("fold-*/*/model"):
        if model.parent.name != keep:
            shutil.rmtree(model, ignore_errors=True)
    for model in (run_dir / "training").glob("fold-*/*/round-*/model"):
        if model.parent.parent.name != keep:
            shutil.rmtree(model, ignore_errors=True)


def _config_mapping(config: RunConfig) -> dict[str, Any]:
    return to_mapping(config)


def _summaries(values: dict[str, dict[str, float]], fold_tests: list[list[str]]) -> dict:
    out = {}
    for metric, per_query in values.items():
        per_fold = [
            float(np.mean([per_query[q] for q in test if q in per_query]))
            for test in fold_tests
            if any(q in per_query for q in test)
        ]
        out[metric] = fold_summary(per_fold)
    return out


def _p_value(
    system: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]]
) -> float | None:
    common = sorted(set(system["ndcg@10"]) & set(baseline["ndcg@10"]))
    if len(common) < 2:
        return None
    a = np.array([system["ndcg@10"][q] for q in common])
    b = np.array([baseline["ndcg@10"][q] for q in common])
    return float(paired_test(a, b).p_value)


def equal_budget(train_config: TrainConfig, n_examples: int) -> TrainConfig:
    """Enough epochs that every row runs exactly ``max_steps`` steps, however many training
    groups its sources produced (the ablation compares sources at the same budget)."""
    if train_config.max_steps is None or n_examples == 0:
        return train_config
    steps_per_epoch = -(-n_examples // train_config.batch_size)
    epochs = max(train_config.epochs, -(-train_config.max_steps // steps_per_epoch))
    return train_config.model_copy(update={"epochs": epochs})


def _train_and_score(
    dataset: Dataset,
    config: RunConfig,
    stages: Stages,
    fold: int,
    row: AblationRow,
    samples: dict[str, pd.DataFrame],
    train_ids: list[str],
    test_ids: list[str],
    validate: Any,
    run_dir: Path,
    best_models: dict[tuple[str, int], Path],
) -> dict[str, Any]:
    train_config = TrainConfig(**{"seed": config.seed, **config.train})
    pooled = pool_samples([samples[m] for m in row.methods])
    key_parts = (
        "row",
        asdict(row),
        config.train,
        config.negatives_per_example,
        asdict(config.dynamic) if row.dynamic else None,
        # the samples' own content keys: the same whether the frames were just made or read back
        sorted(stages.samples_key(m, train_ids, config) for m in row.methods),
        test_ids,
        config.model,
    )
    cached = stages.result_path(*key_parts)
    row_dir = run_dir / "training" / f"fold-{fold}" / row.name.replace(" ", "-")
    if cached.exists():
        outcome = json.loads(cached.read_text())
        if (row_dir / "model").exists():
            best_models[(row.name, fold)] = row_dir / "model"
        return outcome
    examples = build_examples(
        pooled,
        dataset,
        text_fields=config.text_fields,
        negatives_per_example=config.negatives_per_example,
        seed=config.seed,
    )
    train_config = equal_budget(train_config, len(examples))
    dynamic = None
    if row.dynamic:
        positives = pooled[pooled["kind"] == "positive"]
        groups = [
            (str(q), str(p), dataset.product(p).render(config.text_fields))
            for q, p in zip(positives["query_id"], positives["product_id"])
        ]
        known: dict[str, set[str]] = {
            str(q): set(g["product_id"]) for q, g in positives.groupby("query_id")
        }
        known_all = dataset.positives(query_ids=list(known))
        dynamic = (
            DynamicRound(config.dynamic.temperature, config.dynamic.candidates),
            config.dynamic.rounds,
            groups,
            {q: known_all.get(q, set()) for q in known},
        )
    if row_dir.exists():
        shutil.rmtree(row_dir)  # a stale, unfinished row: start it over
    model, curve, seconds = train_row(
        dataset,
        examples,
        train_config,
        model_path=config.model,
        run_dir=row_dir,
        validate=validate,
        show_progress=config.show_progress,
        dynamic=dynamic,
        text_fields=config.text_fields,
        negatives_per_example=config.negatives_per_example,
    )
    run = dense_run(model, dataset, test_ids, text_fields=config.text_fields, depth=config.depth)
    qrels = dataset.qrels()
    outcome = {
        "per_query": _per_query(run, qrels, test_ids),
        "curve": curve,
        "seconds": seconds,
        "examples": len(examples),
    }
    final = row_dir / "model"
    if not final.exists():
        model.save(final)
    best_models[(row.name, fold)] = final
    for checkpoint in row_dir.rglob("checkpoints"):
        shutil.rmtree(checkpoint, ignore_errors=True)  # weights are kept once, in model/
    write_json(cached, outcome)
    return outcome


def _rerank(
    dataset: Dataset,
    config: RunConfig,
    stages: Stages,
    folds: list,
    best_row: str,
    best_models: dict[tuple[str, int], Path],
    run_dir: Path,
) -> dict[str, dict[str, float]]:
    """Train a cross-encoder per fold on the best row's samples; rerank its top ``top_k``."""
    from shopaug.models import BiEncoder, CrossEncoderReranker
    from shopaug.train import fit

    settings = config.reranker
    qrels = dataset.qrels()
    per_query: dict[str, dict[str, float]] = {m: {} for m in HEADLINE_METRICS}
    row = next(r for r in config.ablation if r.name == best_row)
    for fold in folds:
        train_ids, _ = validation_split(
            fold.train, fraction=config.validation_fraction, seed=config.seed
        )
        test_ids = _fold_queries(qrels, fold.test)
        cached = stages.result_path(
            "reranker", asdict(settings), best_row, fold.index, test_ids, config.train
        )
        if cached.exists():
            values = json.loads(cached.read_text())
        else:
            pooled = pool_samples(
                [stages.samples(dataset, m, train_ids, config) for m in row.methods]
            )
            examples = build_examples(
                pooled,
                dataset,
                text_fields=config.text_fields,
                negatives_per_example=settings.negatives_per_example,
                seed=config.seed,
            )
            reranker = CrossEncoderReranker(seed=config.seed)
            train_config = TrainConfig(
                seed=config.seed,
                batch_size=settings.batch_size,
                max_steps=settings.max_steps,
                lr=settings.lr,
                loss="infonce",
                temperature=1.0,
                in_batch_negatives=False,
                epochs=max(
                    1, settings.max_steps * settings.batch_size // max(1, len(examples)) + 1
                ),
            )
            rerank_dir = run_dir / "training" / f"fold-{fold.index}" / "reranker"
            if rerank_dir.exists():
                shutil.rmtree(rerank_dir)
            fit(
                reranker,
                examples,
                train_config,
                run_dir=rerank_dir,
                show_progress=config.show_progress,
            )
            first_model = best_models.get((best_row, fold.index))
            if first_model is None or not first_model.exists():
                logger.warning("no %s model for fold %d: reranker skipped", best_row, fold.index)
                continue
            first_stage = BiEncoder(first_model)
            run = dense_run(
                first_stage, dataset, test_ids, text_fields=config.text_fields, depth=config.depth
            )
            reranked: Run = {}
            for qid in test_ids:
                head = run[qid][: settings.top_k]
                candidates = [
                    (pid, dataset.product(pid).render(config.text_fields)) for pid, _ in head
                ]
                top = reranker.rerank(
                    dataset.query_by_id[qid].text, candidates, top_k=settings.top_k
                )
                reranked[qid] = [(pid, float(s)) for pid, s in top] + run[qid][settings.top_k :]
            values = _per_query(reranked, qrels, test_ids)
            shutil.rmtree(rerank_dir / "checkpoints", ignore_errors=True)
            write_json(cached, values)
        for metric in HEADLINE_METRICS:
            per_query[metric].update(values[metric])
    return per_query


def _segments(dataset: Dataset, systems: dict, best_row: str) -> dict[str, dict[str, float]]:
    """NDCG@10 on head and tail queries: a query is tail when most of its relevant products
    are tail products (outside the most popular 20 % of the catalog)."""
    from shopaug.augment.audit import head_products

    head, _ = head_products(dataset)
    positives = dataset.positives()
    segment_of = {
        qid: "head" if np.mean([p in head for p in products]) >= 0.5 else "tail"
        for qid, products in positives.items()
        if products
    }
    out: dict[str, dict[str, float]] = {}
    for segment in ("head", "tail"):
        out[segment] = {}
        for name in ("bm25", "zero-shot", best_row, "reranker"):
            if name not in systems:
                continue
            values = [
                v for q, v in systems[name]["ndcg@10"].items() if segment_of.get(q) == segment
            ]
            if values:
                out[segment][f"{name} ndcg@10"] = float(np.mean(values))
        measured = systems[best_row]["ndcg@10"]
        out[segment]["queries"] = float(sum(segment_of.get(q) == segment for q in measured))
    return out


def _render_report(result: dict[str, Any], run_dir: Path) -> None:
    from shopaug.eval.report import render_report

    manifest = json.loads((run_dir / "manifest.json").read_text())
    render_report({**result, "manifest": manifest}, run_dir / "report.html")


__all__ = ["FoldedMetrics", "run_experiment"]
