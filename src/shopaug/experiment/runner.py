"""``shopaug run``: data -> samples -> trained rows -> fusion -> reranker -> selection -> report.

Every figure follows BENCHMARKS.md: query-level folds; each fold's validation queries are carved
from its training side; the system to report and to serve is chosen on validation queries
only, and the test queries of each fold are read once, for the figure. Every finished stage is
cached under ``RUN_DIR/cache`` by the content it depends on (see :mod:`.stages`).

Why one module of this length: it is the order of the stages of one run; each stage is a short
function and the work itself lives in ``rows``, ``rerank``, ``report`` and ``stages``.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from shopaug.augment.samples import write_samples
from shopaug.config import stage_seeds, to_mapping
from shopaug.data import kfold_queries, load_dataset, validation_split, write_folds
from shopaug.data.splits import FOLDS_FILE
from shopaug.eval.pipeline import HEADLINE_METRICS
from shopaug.eval.selection import best_on_validation
from shopaug.experiment.config import AblationRow, RunConfig
from shopaug.experiment.context import FoldContext, PerQuery, RunContext, resolve_device
from shopaug.experiment.report import assemble_result, render
from shopaug.experiment.rows import RowResult, train_and_rank_row
from shopaug.experiment.stages import MakeSamples, Stages, content_hash
from shopaug.manifest import prepare_run_dir, write_json, write_manifest
from shopaug.retrieval.fusion import convex_fuse, pick_weight, rrf_fuse

logger = logging.getLogger(__name__)
Run = dict[str, list[tuple[str, float]]]

ZERO_SHOT_HYBRID = "zero-shot hybrid"


@dataclass
class System:
    """A ranked system across folds: its validation and test runs per fold, and what it cost.

    Attributes:
        name: Row label.
        kind: ``baseline``, ``fine-tune``, ``augmented``, ``fusion`` or ``reranker``.
        runs: fold index -> (validation run, test run).
        info: Budget and provenance (epochs, steps, seconds, fusion weights, ...).
    """

    name: str
    kind: str
    runs: dict[int, tuple[Run, Run]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def scores(self, run: RunContext, folds: list[FoldContext]) -> tuple[PerQuery, PerQuery]:
        """(validation, test) metric -> query id -> value, pooled over folds."""
        valid: PerQuery = {m: {} for m in HEADLINE_METRICS}
        test: PerQuery = {m: {} for m in HEADLINE_METRICS}
        for fold in folds:
            if fold.index not in self.runs:
                continue
            valid_run, test_run = self.runs[fold.index]
            for target, ranked, ids in (
                (valid, valid_run, fold.valid_ids),
                (test, test_run, fold.test_ids),
            ):
                for metric, values in run.per_query(ranked, ids).items():
                    target[metric].update(values)
        return valid, test


def run_experiment(config: RunConfig, out: str | Path, *, command: str = "") -> dict[str, Any]:
    """Run the whole pipeline into ``out``; returns the metrics.json payload.

    ``config.tracking`` says where it is recorded (TensorBoard, MLflow or nothing; see
    :mod:`shopaug.train.tracking`): with MLflow, the config as params, every training as a
    nested run, the final metrics, the run directory and the served model.
    ``config.engine: ray`` makes the samples on Ray (:mod:`shopaug.scale`).
    """
    from shopaug.train.tracking import tracking_session

    run_dir = prepare_run_dir(out)
    with (
        tracking_session(
            config.tracking_config, run_dir, run_name=config.name, params=to_mapping(config)
        ) as session,
        _samples_engine(config) as make_samples,
    ):
        result = _run_pipeline(config, run_dir, command=command, make_samples=make_samples)
        session.log_metrics(tracked_metrics(result))
        served = result.get("served", {}).get("model_dir")
        if served:
            session.log_served_model(Path(served))
        session.log_run_directory()
    return result


@contextmanager
def _samples_engine(config: RunConfig) -> Iterator[MakeSamples]:
    """What makes the samples: :func:`augment` here, or the same on Ray (``engine: ray``)."""
    if config.engine != "ray":
        from shopaug.augment.pipeline import augment

        yield augment
        return
    from shopaug.scale import ray_engine

    with ray_engine() as engine:
        yield engine.augment


def tracked_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The figures of a run to record: the chosen system's test means (``test/ndcg@10``) and
    every ablation row's test NDCG@10 (``ablation/<row>/ndcg@10``)."""
    values = {
        f"test/{name}": float(value["mean"])
        for name, value in result.get("metrics", {}).items()
        if isinstance(value, dict) and isinstance(value.get("mean"), int | float)
    }
    for entry in result.get("ablation", []):
        mean = entry["metrics"]["ndcg@10"]["mean"]
        if isinstance(mean, int | float):
            values[f"ablation/{entry['name']}/ndcg@10"] = float(mean)
    return values


def _run_pipeline(
    config: RunConfig, out: str | Path, *, command: str, make_samples: MakeSamples
) -> dict[str, Any]:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    run, folds = _open_run(config, out, make_samples=make_samples)
    timings["load"] = time.perf_counter() - started

    start = time.perf_counter()
    systems = _baselines(run, folds)
    timings["baselines"] = time.perf_counter() - start

    start = time.perf_counter()
    samples_by_row: dict[str, dict[int, pd.DataFrame]] = {}
    for row in config.ablation:
        system, samples_by_row[row.name] = _train_row(run, folds, row)
        systems.append(system)
    timings["ablation"] = time.perf_counter() - start

    if config.fusion.enabled:
        start = time.perf_counter()
        bm25 = next(s for s in systems if s.name == "bm25")
        trained = [s for s in systems if s.kind in ("fine-tune", "augmented")]
        for system in trained:
            systems.extend(_fuse(run, folds, system, bm25))
        timings["fusion"] = time.perf_counter() - start

    scored = {s.name: s.scores(run, folds) for s in systems}
    first_stage = select_system(systems, scored)
    chosen, reranker = first_stage, None
    if config.reranker.enabled:
        start = time.perf_counter()
        reranked = _rerank(run, folds, first_stage, samples_by_row)
        systems.append(reranked)
        scored[reranked.name] = reranked.scores(run, folds)
        chosen, reranker = gate_reranker(first_stage, reranked, scored)
        timings["reranker"] = time.perf_counter() - start

    start = time.perf_counter()
    served_info = _serve_model(run, {s.name: s for s in systems}, chosen, first_stage)
    timings["served_model"] = time.perf_counter() - start

    audit = _audit(run, folds, samples_by_row)
    result = assemble_result(
        run, folds, systems, scored, chosen=chosen, reranker=reranker, audit=audit
    )
    result["served"] = served_info
    write_json(run.run_dir / "metrics.json", result)
    timings["total"] = time.perf_counter() - started
    write_manifest(
        run.run_dir,
        command=command or "shopaug run",
        config=to_mapping(config),
        data={
            "name": run.dataset.name,
            "checksums": run.dataset.checksums,
            **run.dataset.summary(),
        },
        seeds=stage_seeds(config.seed),
        timings=timings,
        metrics={e["name"]: e["metrics"]["ndcg@10"]["mean"] for e in result["ablation"]},
        models={"served": served_info.get("model_dir", ""), "base": config.model},
        privacy=served_info.get("privacy"),
    )
    render(result, run.run_dir)
    return result


def _open_run(
    config: RunConfig, out: str | Path, *, make_samples: MakeSamples
) -> tuple[RunContext, list[FoldContext]]:
    run_dir = prepare_run_dir(out)
    if config.products:  # the run directory is read from elsewhere (serve, online)
        config.products = str(Path(config.products).resolve())
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(to_mapping(config), sort_keys=False), "utf-8"
    )
    dataset = load_dataset(config.data, data_dir=config.data_dir, products_path=config.products)
    data_key = content_hash(dataset.name, dataset.checksums or dataset.summary())
    device = resolve_device(config.device)
    if device == "cpu":
        _use_all_cores()
    stages = Stages(run_dir, data_key, make_samples=make_samples)
    run = RunContext(dataset, config, stages, run_dir, device=device)
    splits = kfold_queries([q.id for q in dataset.queries], n_folds=config.folds, seed=config.seed)
    write_folds(splits, run_dir / FOLDS_FILE, seed=config.seed)
    folds = []
    for split in splits[: config.train_folds or len(splits)]:
        train_ids, valid_ids = validation_split(
            split.train, fraction=config.validation_fraction, seed=config.seed
        )
        folds.append(
            FoldContext(
                index=split.index,
                train_ids=tuple(train_ids),
                valid_ids=run.scored(valid_ids),
                test_ids=run.scored(split.test),
            )
        )
    return run, folds


def _use_all_cores() -> None:
    """Give torch every core, unless the user chose a thread count with ``OMP_NUM_THREADS``
    (on a machine shared with other jobs one thread often trains faster than two that wait
    for each other)."""
    import os

    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        logger.info("torch uses %d CPU threads (OMP_NUM_THREADS)", torch.get_num_threads())
        return
    threads = os.cpu_count() or 1
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    logger.info("torch uses %d CPU threads", threads)


def _baselines(run: RunContext, folds: list[FoldContext]) -> list[System]:
    """BM25, the zero-shot base model, and their RRF hybrid: what a shop has without training."""
    depth = max(run.config.depth, run.config.fusion.depth)
    ids = sorted({q for f in folds for q in (*f.valid_ids, *f.test_ids)})
    bm25_run = run.bm25_run(ids, depth)
    dense_run = run.rank(
        run.item_encoder().encode(run.query_texts(ids)), run.base_vectors(), ids, depth=depth
    )
    hybrid_run = rrf_fuse([dense_run, bm25_run], depth=depth, rrf_k=run.config.fusion.rrf_k)
    systems = []
    for name, full in (
        ("bm25", bm25_run),
        ("zero-shot", dense_run),
        (ZERO_SHOT_HYBRID, hybrid_run),
    ):
        system = System(name, "baseline")
        for fold in folds:
            system.runs[fold.index] = (
                {q: full[q] for q in fold.valid_ids},
                {q: full[q] for q in fold.test_ids},
            )
        systems.append(system)
    return systems


def _row_samples(
    run: RunContext, row: AblationRow, train_ids: tuple[str, ...]
) -> tuple[pd.DataFrame, list[str]]:
    """The pooled samples of ``row`` for ``train_ids`` and their content keys."""
    from shopaug.experiment.examples import pool_samples

    config = run.config
    frames, keys = [], []
    for method in row.methods:
        frame, key = run.stages.samples(
            run.dataset,
            method,
            train_ids,
            config.row_augment(row),
            text_fields=config.text_fields,
            seed=config.seed,
            model=config.model,
            show_progress=config.show_progress,
        )
        frames.append(frame)
        keys.append(key)
    return pool_samples(frames), keys


def _train_row(
    run: RunContext, folds: list[FoldContext], row: AblationRow
) -> tuple[System, dict[int, pd.DataFrame]]:
    config = run.config
    system = System(row.name, row.kind)
    per_fold: list[dict[str, Any]] = []
    samples_by_fold: dict[int, pd.DataFrame] = {}
    for fold in folds:
        samples, keys = _row_samples(run, row, fold.train_ids)
        samples_by_fold[fold.index] = samples
        parts = (
            "row",
            row.cache_key(),
            config.train,
            config.tower,
            config.gain_weights,
            config.negatives_per_example,
            asdict(config.dynamic) if row.dynamic else None,
            sorted(keys),
            fold.valid_ids,
            fold.test_ids,
            config.model,
            config.depth,
            config.fusion.depth,
        )
        cached = run.stages.read(*parts)
        if cached is None:
            logger.info("training %s on fold %d", row.name, fold.index)
            result = train_and_rank_row(run, fold, row, samples, depth=_run_depth(config))
            shutil.rmtree(Path(result.model_dir), ignore_errors=True)  # 90 MB; metrics cached
            cached = run.stages.write(result.to_json(), *parts)
        outcome = RowResult(**cached)
        system.runs[fold.index] = (outcome.valid_run, outcome.test_run)
        per_fold.append({k: v for k, v in cached.items() if k not in ("valid_run", "test_run")})
    system.info = _budget(per_fold)
    return system, samples_by_fold


def _run_depth(config: RunConfig) -> int:
    return max(config.depth, config.fusion.depth if config.fusion.enabled else 0)


def _budget(per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    """A row's training budget, averaged over folds (the table's budget columns)."""
    return {
        "epochs": float(np.mean([p["epochs"] for p in per_fold])),
        "best_epoch": [p["best_epoch"] for p in per_fold],
        "steps": float(np.mean([p["steps"] for p in per_fold])),
        "train_seconds_per_fold": float(np.mean([p["seconds"] for p in per_fold])),
        "groups": float(np.mean([p["groups"] for p in per_fold])),
        "examples": float(np.mean([p["pairs"] for p in per_fold])),
        "curve": per_fold[0]["curve"] if per_fold else [],
    }


def _fuse(run: RunContext, folds: list[FoldContext], system: System, bm25: System) -> list[System]:
    """``system`` fused with BM25 by RRF and by a convex fusion whose weight each fold picks on
    its validation queries."""
    fusion = run.config.fusion
    depth = run.config.depth
    rrf = System(f"{system.name} + bm25 (rrf)", "fusion", info={"of": system.name})
    convex = System(
        f"{system.name} + bm25 (convex)", "fusion", info={"of": system.name, "weight": []}
    )
    for fold in folds:
        (dense_valid, dense_test), (bm25_valid, bm25_test) = (
            system.runs[fold.index],
            bm25.runs[fold.index],
        )
        rrf.runs[fold.index] = (
            rrf_fuse([dense_valid, bm25_valid], depth=depth, rrf_k=fusion.rrf_k),
            rrf_fuse([dense_test, bm25_test], depth=depth, rrf_k=fusion.rrf_k),
        )
        weight = pick_weight(
            dense_valid,
            bm25_valid,
            weights=fusion.weights,
            depth=depth,
            score=partial(run.mean_ndcg, query_ids=fold.valid_ids),
        )
        convex.info["weight"].append(weight)
        convex.runs[fold.index] = (
            convex_fuse(dense_valid, bm25_valid, weight=weight, depth=depth),
            convex_fuse(dense_test, bm25_test, weight=weight, depth=depth),
        )
    return [rrf, convex]


def _mean(values: dict[str, float]) -> float:
    return float(np.mean(list(values.values()))) if values else float("nan")


def select_system(systems: list[System], scored: dict[str, tuple[PerQuery, PerQuery]]) -> System:
    """The system with the best mean validation NDCG@10
    (:func:`shopaug.eval.selection.best_on_validation`, given the validation scores only).
    Ties go to the earlier system (baselines come first)."""
    by_name = {system.name: system for system in systems}
    chosen = best_on_validation({s.name: scored[s.name][0]["ndcg@10"] for s in systems})
    return by_name[chosen]


def gate_reranker(
    first_stage: System, reranked: System, scored: dict[str, tuple[PerQuery, PerQuery]]
) -> tuple[System, dict[str, Any]]:
    """The reranker is served only when it beats its first stage on validation queries."""
    valid_first = _mean(scored[first_stage.name][0]["ndcg@10"])
    valid_reranked = _mean(scored[reranked.name][0]["ndcg@10"])
    served = valid_reranked > valid_first
    decision = {
        "first_stage": first_stage.name,
        "served": served,
        "validation_first_stage": valid_first,
        "validation_reranked": valid_reranked,
    }
    return (reranked if served else first_stage), decision


def _rerank(
    run: RunContext,
    folds: list[FoldContext],
    first_stage: System,
    samples_by_row: dict[str, dict[int, pd.DataFrame]],
) -> System:
    """Per fold: a reranker trained on the fold's training queries reranks the first stage's
    top ``top_k``: a cross-encoder (judged positives and negatives, plus the first stage's row
    samples) or LambdaMART over candidate features (``reranker.kind``)."""
    from shopaug.experiment.rerank import lambdamart_reranking, rerank_run, train_reranker

    config = run.config
    kind = config.reranker.kind
    source_row = first_stage.info.get("of", first_stage.name)
    system = System(
        f"{first_stage.name} + reranker ({kind})", "reranker", info={"of": first_stage.name}
    )
    for fold in folds:
        if kind == "lambdamart":
            from shopaug.retrieval.rerank_features import FEATURE_NAMES

            parts: tuple[Any, ...] = (
                "reranker-lambdamart",
                FEATURE_NAMES,
                config.reranker.cache_key(),
                config.text_fields,
                config.model,
                fold.train_ids,
                first_stage.runs[fold.index],
            )
            cached = run.stages.read(*parts)
            if cached is None:
                valid_run, test_run = lambdamart_reranking(run, fold, first_stage.runs[fold.index])
                cached = run.stages.write([valid_run, test_run], *parts)
            system.runs[fold.index] = (cached[0], cached[1])
            continue
        judged, key = run.stages.samples(
            run.dataset,
            "human-negatives",
            fold.train_ids,
            config.augment,
            text_fields=config.text_fields,
            seed=config.seed,
            model=config.model,
            show_progress=config.show_progress,
        )
        extra = samples_by_row.get(source_row, {}).get(fold.index)
        parts = (
            "reranker",
            config.reranker.cache_key(),
            key,
            content_hash(extra.to_dict("list")) if extra is not None else None,
            config.text_fields,
            config.model,
            first_stage.runs[fold.index],
        )
        cached = run.stages.read(*parts)
        if cached is None:
            reranker = train_reranker(run, fold, [judged] + ([extra] if extra is not None else []))
            valid_run, test_run = first_stage.runs[fold.index]
            cached = run.stages.write(
                [rerank_run(run, reranker, valid_run), rerank_run(run, reranker, test_run)], *parts
            )
        system.runs[fold.index] = (cached[0], cached[1])
    return system


def _serve_model(
    run: RunContext, systems: dict[str, System], chosen: System, first_stage: System
) -> dict[str, Any]:
    """Retrain the chosen configuration's bi-encoder on every judged query, for the median of
    the folds' best epochs, into ``RUN_DIR/model``; its samples go to ``samples.parquet``.

    A fusion first stage also writes ``model/fusion.json`` (method and median weight)."""
    from shopaug.experiment.rows import train_final_model

    config = run.config
    row_name = first_stage.info.get("of", first_stage.name)
    row = next((r for r in config.ablation if r.name == row_name), None)
    info: dict[str, Any] = {"system": chosen.name, "row": row_name}
    model_dir = run.run_dir / "model"
    if row is None:
        info.update(_serve_base_model(run, row_name, model_dir))
        if chosen.kind == "reranker" and "model_dir" in info:
            info["reranker"] = _serve_reranker(run, model_dir, with_encoder=False)
        return info
    all_ids = tuple(q.id for q in run.dataset.queries)
    samples, _ = _row_samples(run, row, all_ids)
    write_samples(samples, run.run_dir / "samples.parquet")
    best_epochs = [e for e in systems[row_name].info.get("best_epoch", []) if e]
    epochs = max(1, round(float(np.median(best_epochs)))) if best_epochs else 1
    train_final_model(run, row, samples, epochs=epochs, out=model_dir)
    info.update({"model_dir": str(model_dir), "epochs": epochs, "queries": len(all_ids)})
    from shopaug.train.dp import read_privacy

    privacy = read_privacy(model_dir)  # a DP-SGD model's guarantee, for the manifest
    if privacy is not None:
        info["privacy"] = privacy
    if first_stage.kind == "fusion":
        fusion: dict[str, Any] = {"method": "rrf" if "(rrf)" in first_stage.name else "convex"}
        if fusion["method"] == "convex":
            fusion["weight"] = float(np.median(first_stage.info["weight"]))
        write_json(model_dir / "fusion.json", fusion)
        info["fusion"] = fusion
    if chosen.kind == "reranker":
        info["reranker"] = _serve_reranker(run, model_dir, with_encoder=True)
    return info


def _serve_reranker(run: RunContext, model_dir: Path, *, with_encoder: bool) -> Any:
    """The chosen reranker in ``model_dir/reranker`` (LambdaMART), or why it is not served."""
    if run.config.reranker.kind != "lambdamart":
        return (
            "chosen on validation but not served: the service serves LambdaMART rerankers "
            "only; model/ holds its first stage"
        )
    from shopaug.experiment.rerank import save_served_reranker
    from shopaug.retrieval.reranking import RERANKER_DIR

    return save_served_reranker(run, model_dir / RERANKER_DIR, with_encoder=with_encoder)


def _serve_base_model(run: RunContext, name: str, model_dir: Path) -> dict[str, Any]:
    """The untrained baseline ``name`` as a served model: the base encoder in ``model_dir``,
    with ``fusion.json`` (RRF with BM25) for the zero-shot hybrid. BM25 alone is not a model
    the service can serve."""
    if name not in ("zero-shot", ZERO_SHOT_HYBRID):
        return {"note": f"{name} trains no model and the service serves none for it"}
    from shopaug.models.bi_encoder import BiEncoder

    base = run.config.model
    encoder = BiEncoder(None if base == "minilm" else base)
    encoder.save(model_dir)
    info: dict[str, Any] = {"model_dir": str(model_dir), "note": f"{name}: the base model"}
    if name == ZERO_SHOT_HYBRID:
        depth = max(run.config.depth, run.config.fusion.depth)
        fusion = {"method": "rrf", "rrf_k": run.config.fusion.rrf_k, "depth": depth}
        write_json(model_dir / "fusion.json", fusion)
        info["fusion"] = fusion
    return info


def _audit(
    run: RunContext, folds: list[FoldContext], samples_by_row: dict[str, dict[int, pd.DataFrame]]
) -> list[dict[str, Any]]:
    """False-negative rates (Exact, Exact or Partial) and tail share of each method's negatives
    on the first fold, against the human labels."""
    from shopaug.augment.audit import audit_samples

    if not folds:
        return []
    fold = folds[0]
    frames = [by_fold[fold.index] for by_fold in samples_by_row.values() if fold.index in by_fold]
    if not frames:
        return []
    pooled = pd.concat(frames, ignore_index=True).drop_duplicates(
        subset=["query_id", "product_id", "kind", "method"]
    )
    report = audit_samples(pooled, run.dataset, test_query_ids=list(fold.test_ids))
    return list(report.per_method)


__all__ = ["System", "gate_reranker", "run_experiment", "select_system"]
