"""The ``metrics.json`` of ``shopaug run``: one entry per system with fold and bootstrap
intervals, paired tests against the baselines a user would pick, budgets, and the system chosen
on validation queries; then the HTML report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shopaug.eval.metrics import evaluate_run
from shopaug.eval.significance import (
    bootstrap_interval,
    fold_summary,
    paired_bootstrap,
    paired_test,
)
from shopaug.experiment.context import FoldContext, PerQuery, RunContext

if TYPE_CHECKING:
    from shopaug.experiment.runner import System

#: The baselines every row is tested against (paired, over the same test queries).
REFERENCES = {
    "st_fine_tune": "sentence-transformers fine-tune",
    "st_fine_tune_bm25": "sentence-transformers fine-tune + bm25 (convex)",
    "plain_fine_tune": "plain fine-tune",
    "zero_shot_hybrid": "zero-shot hybrid",
    "zero_shot": "zero-shot",
    "bm25": "bm25",
}
SELECTION_METRIC = "ndcg@10"


def _summaries(per_query: PerQuery, folds: list[FoldContext]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric, values in per_query.items():
        per_fold = [
            float(np.mean([values[q] for q in fold.test_ids if q in values]))
            for fold in folds
            if any(q in values for q in fold.test_ids)
        ]
        out[metric] = fold_summary(per_fold)
    return out


def _paired(a: dict[str, float], b: dict[str, float], seed: int) -> dict[str, Any] | None:
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return None
    x = np.array([a[q] for q in common])
    y = np.array([b[q] for q in common])
    boot = paired_bootstrap(x, y, seed=seed)
    return {
        "queries": len(common),
        "mean_difference": float(boot.mean_difference),
        "ci95": [float(boot.low), float(boot.high)],
        "p_value_bootstrap": float(boot.p_value),
        "p_value": float(paired_test(x, y).p_value),
    }


def _exact_only(run: RunContext, system: System, folds: list[FoldContext]) -> dict[str, Any]:
    """NDCG@10 with Exact = 1 only, over the test queries that have an Exact product."""
    gains = {label: 0 for label in run.dataset.gains}
    top = max(run.dataset.gains.values())
    gains.update({label: 1 for label, gain in run.dataset.gains.items() if gain == top})
    qrels = run.dataset.qrels(gains=gains)
    per_fold = []
    for fold in folds:
        if fold.index not in system.runs:
            continue
        ids = [q for q in fold.test_ids if any(g > 0 for g in qrels.get(q, {}).values())]
        if ids:
            values = evaluate_run(
                system.runs[fold.index][1], qrels, metrics=["ndcg@10"], query_ids=ids
            )
            per_fold.append(float(np.mean(values["ndcg@10"])))
    return fold_summary(per_fold)


def assemble_result(
    run: RunContext,
    folds: list[FoldContext],
    systems: list[System],
    scored: dict[str, tuple[PerQuery, PerQuery]],
    *,
    chosen: System,
    reranker: dict[str, Any] | None,
    audit: list[dict[str, Any]],
) -> dict[str, Any]:
    """The metrics.json payload (see docs/evaluation.md)."""
    seed = run.config.seed
    entries = []
    for system in systems:
        valid, test = scored[system.name]
        entry: dict[str, Any] = {
            "name": system.name,
            "kind": system.kind,
            "metrics": _summaries(test, folds),
            "ndcg@10_exact": _exact_only(run, system, folds),
            "validation": {SELECTION_METRIC: _mean(valid[SELECTION_METRIC])},
        }
        values = list(test[SELECTION_METRIC].values())
        if len(values) >= 2:
            interval = bootstrap_interval(np.array(values), seed=seed)
            entry["bootstrap_ci95"] = {
                SELECTION_METRIC: [float(interval.low), float(interval.high)]
            }
        for key, reference in REFERENCES.items():
            if reference == system.name or reference not in scored:
                entry[f"p_value_vs_{key}"] = None
                continue
            paired = _paired(test[SELECTION_METRIC], scored[reference][1][SELECTION_METRIC], seed)
            entry[f"p_value_vs_{key}"] = paired["p_value"] if paired else None
            entry[f"vs_{key}"] = paired
        for key in (
            "epochs",
            "steps",
            "train_seconds_per_fold",
            "examples",
            "groups",
            "weight",
            "of",
        ):
            if key in system.info:
                entry[key] = system.info[key]
        entries.append(entry)
    chosen_valid, chosen_test = scored[chosen.name]
    return {
        "dataset": run.dataset.name,
        "retriever": chosen.name,
        "folds": run.config.folds,
        "trained_folds": len(folds),
        "tower": run.config.tower,
        "train": dict(run.config.train),
        "selected": {
            "system": chosen.name,
            "by": f"validation {SELECTION_METRIC}",
            "validation": {SELECTION_METRIC: _mean(chosen_valid[SELECTION_METRIC])},
        },
        "metrics": _summaries(chosen_test, folds),
        "best_row": chosen.name,
        "ablation": entries,
        "segments": _segments(run, systems, scored, chosen),
        "curves": {s.name: s.info["curve"] for s in systems if s.info.get("curve")},
        "audit": audit,
        "reranker": reranker,
        "queries": {
            "validation": sum(len(f.valid_ids) for f in folds),
            "test": sum(len(f.test_ids) for f in folds),
        },
    }


def _mean(values: dict[str, float]) -> float:
    return float(np.mean(list(values.values()))) if values else float("nan")


def _segments(
    run: RunContext,
    systems: list[System],
    scored: dict[str, tuple[PerQuery, PerQuery]],
    chosen: System,
) -> dict[str, dict[str, float]]:
    """Test NDCG@10 on head and tail queries: a query is tail when most of its relevant
    products are outside the most popular 20 % of the catalog (popularity counted on the
    judgments of every query: a description of the data, not a training input)."""
    from shopaug.augment.audit import head_products

    head, _ = head_products(run.dataset)
    segment_of = {
        qid: "head" if np.mean([p in head for p in products]) >= 0.5 else "tail"
        for qid, products in run.dataset.positives().items()
        if products
    }
    names: list[str] = [
        n for n in ("bm25", "zero-shot", "zero-shot hybrid", "plain fine-tune") if n in scored
    ]
    names.append(chosen.name)
    out: dict[str, dict[str, float]] = {}
    for segment in ("head", "tail"):
        out[segment] = {}
        for name in dict.fromkeys(names):
            values = [
                v for q, v in scored[name][1]["ndcg@10"].items() if segment_of.get(q) == segment
            ]
            if values:
                out[segment][f"{name} ndcg@10"] = float(np.mean(values))
        measured = scored[chosen.name][1]["ndcg@10"]
        out[segment]["queries"] = float(sum(segment_of.get(q) == segment for q in measured))
    return out


def render(result: dict[str, Any], run_dir: Path) -> None:
    """``report.html`` from the result and the run's manifest."""
    from shopaug.eval.report import render_report

    manifest = json.loads((run_dir / "manifest.json").read_text())
    render_report({**result, "manifest": manifest}, run_dir / "report.html")
