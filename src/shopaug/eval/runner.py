"""``shopaug eval``: a zero-shot retriever over the full catalog, scored with k-fold splits."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from shopaug.data import kfold_queries, load_dataset, write_folds
from shopaug.data.loaders import WANDS_EXACT_ONLY_GAINS
from shopaug.data.records import DEFAULT_TEXT_FIELDS, Dataset
from shopaug.eval.metrics import queries_with_relevant
from shopaug.eval.pipeline import HEADLINE_METRICS, evaluate_folds, retrieve_run
from shopaug.eval.trec import write_trec_qrels, write_trec_run
from shopaug.manifest import prepare_run_dir, write_json, write_manifest
from shopaug.retrieval import RetrieverConfig, build_retriever


@dataclass
class EvalConfig:
    data: str = "demo"
    retriever: str = "bm25"
    model: str = "minilm"
    folds: int = 5
    seed: int = 0
    text_fields: tuple[str, ...] = DEFAULT_TEXT_FIELDS
    data_dir: str | None = None
    products: str | None = None
    depth: int = 100
    cache_dir: str | None = None
    show_progress: bool = True


def exact_only_qrels(dataset: Dataset) -> dict[str, dict[str, int]]:
    """WANDS Exact-only judgments (Exact 1, Partial and Irrelevant 0) of the queries that have
    at least one Exact product.

    The other queries (about half of wands-subset) would score 0 by construction and only pull
    the mean down, so the Exact-only variant is reported over these queries alone.
    """
    return queries_with_relevant(dataset.qrels(gains=WANDS_EXACT_ONLY_GAINS))


def evaluate_retriever(config: EvalConfig, out: str | Path, *, command: str = "") -> dict:
    """Load, retrieve for every query, score per fold, and write the run directory.

    Writes ``metrics.json`` (headline metrics, plus the judged-only and Exact-only variants),
    ``run.trec``, ``qrels.trec``, ``folds.json`` and ``manifest.json``. The Exact-only variant
    (``exact_only``) is scored over the queries with at least one Exact product only; their
    number is ``exact_only_queries`` (see :func:`exact_only_qrels`).
    """
    timings: dict[str, float] = {}
    run_dir = prepare_run_dir(out)
    start = time.perf_counter()
    dataset = load_dataset(
        config.data, data_dir=config.data_dir, products_path=config.products, seed=config.seed
    )
    timings["load"] = time.perf_counter() - start
    folds = kfold_queries([q.id for q in dataset.queries], n_folds=config.folds, seed=config.seed)
    write_folds(folds, run_dir / "folds.json", seed=config.seed)

    start = time.perf_counter()
    retriever = build_retriever(
        dataset,
        RetrieverConfig(
            kind=config.retriever,
            model=config.model,
            text_fields=config.text_fields,
            cache_dir=config.cache_dir,
            show_progress=config.show_progress,
        ),
    )
    timings["index"] = time.perf_counter() - start
    start = time.perf_counter()
    run = retrieve_run(
        dataset,
        retriever,
        [q.id for q in dataset.queries],
        depth=config.depth,
        show_progress=config.show_progress,
    )
    timings["retrieve"] = time.perf_counter() - start

    qrels = dataset.qrels()
    graded = evaluate_folds(run, qrels, folds, metrics=HEADLINE_METRICS)
    judged = evaluate_folds(run, qrels, folds, metrics=HEADLINE_METRICS, judged_only=True)
    result: dict = {
        "dataset": dataset.name,
        "retriever": config.retriever,
        "retriever_id": retriever.id,
        "folds": config.folds,
        "seed": config.seed,
        "text_fields": list(config.text_fields),
        "queries": len(dataset.queries),
        "products": len(dataset.products),
        "metrics": graded.summary,
        "judged_only": judged.summary,
    }
    if set(dataset.gains) >= {"Exact", "Partial"}:
        exact = exact_only_qrels(dataset)
        result["exact_only"] = evaluate_folds(run, exact, folds, metrics=HEADLINE_METRICS).summary
        result["exact_only_queries"] = len(exact)
    write_json(run_dir / "metrics.json", result)
    write_trec_run(run, run_dir / "run.trec", tag=f"shopaug-{config.retriever}", depth=config.depth)
    write_trec_qrels(qrels, run_dir / "qrels.trec")
    write_manifest(
        run_dir,
        command=command or "shopaug eval",
        config=asdict(config),
        data={"name": dataset.name, "checksums": dataset.checksums, **dataset.summary()},
        seeds={"folds": config.seed},
        timings=timings,
        metrics={m: v["mean"] for m, v in graded.summary.items()},
        models={"retriever": retriever.id},
    )
    return result
