"""Zero-shot baselines: BM25, dense MiniLM and hybrid (RRF), over several product-text choices.

Usage:
    python benchmarks/relevance.py --data demo --data wands-subset [--folds 5]

Writes the ``relevance`` section of benchmarks/RESULTS.md and the run directories under
benchmarks/out/relevance/ (metrics.json, run.trec, qrels.trec per system).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from results_file import invocation, write_section
from shopaug.data import kfold_queries, load_dataset, validation_split
from shopaug.encoders.dense import SentenceTransformerEncoder
from shopaug.eval.metrics import evaluate_run
from shopaug.eval.runner import EvalConfig, evaluate_retriever
from shopaug.eval.selection import choose_per_fold
from shopaug.eval.trec import read_trec_run

#: The share of each fold's training queries carved out for validation, as `shopaug run full`.
VALIDATION_FRACTION = 0.15

TEXT_CHOICES = {
    "name": ("title",),
    "name+class": ("title", "category"),
    "name+class+description": ("title", "category", "text"),
}


def encoding_throughput(data: str, fields: tuple[str, ...], n: int = 600) -> float:
    """Products per second encoded by MiniLM (no cache), on the first ``n`` products."""
    texts = load_dataset(data).product_texts(fields)[:n]
    encoder = SentenceTransformerEncoder()
    encoder.encode(texts[:32])  # load and warm up
    start = time.perf_counter()
    encoder.encode(texts)
    return len(texts) / (time.perf_counter() - start)


def text_choice_on_validation(
    data: str, out: Path, retriever: str, folds: int, seed: int = 0
) -> tuple[list[str], dict[str, float], float]:
    """The text choice each fold's validation queries prefer (carved from its training side as
    ``shopaug run`` does), and the test NDCG@10 over folds of every fixed choice and of the
    validation-chosen one. Test queries never reach the choice (:func:`choose_per_fold`)."""
    dataset = load_dataset(data)
    qrels = dataset.qrels()
    scored = [q.id for q in dataset.queries if any(g > 0 for g in qrels.get(q.id, {}).values())]
    per_query = {}
    for choice in TEXT_CHOICES:
        run = read_trec_run(out / data / choice / retriever / "run.trec")
        values = evaluate_run(run, qrels, metrics=["ndcg@10"], query_ids=scored)["ndcg@10"]
        per_query[choice] = dict(zip(scored, values.tolist()))
    splits = kfold_queries([q.id for q in dataset.queries], n_folds=folds, seed=seed)
    validation, tests = [], []
    for split in splits:
        _, valid = validation_split(split.train, fraction=VALIDATION_FRACTION, seed=seed)
        validation.append([q for q in valid if q in per_query["name"]])
        tests.append([q for q in split.test if q in per_query["name"]])
    choices = choose_per_fold(per_query, validation)
    fixed = {
        choice: sum(sum(values[q] for q in t) / len(t) for t in tests) / len(tests)
        for choice, values in per_query.items()
    }
    chosen = sum(sum(per_query[c][q] for q in t) / len(t) for c, t in zip(choices, tests)) / len(
        tests
    )
    return choices, fixed, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", action="append", default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--retrievers", default="bm25,dense,hybrid")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/relevance"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    datasets = args.data or ["demo", "wands-subset"]
    rows = []
    for data in datasets:
        for choice, fields in TEXT_CHOICES.items():
            for retriever in args.retrievers.split(","):
                out = args.out / data / choice / retriever
                result = evaluate_retriever(
                    EvalConfig(
                        data=data,
                        retriever=retriever,
                        folds=args.folds,
                        text_fields=fields,
                        show_progress=False,
                    ),
                    out,
                    command="benchmarks/relevance.py",
                )
                m, j = result["metrics"], result["judged_only"]
                rows.append((data, choice, retriever, m, j, result.get("exact_only")))
                print(
                    f"{data:<13} {choice:<24} {retriever:<7} ndcg@10 {m['ndcg@10']['mean']:.4f}",
                    flush=True,
                )
    lines = [
        "## Zero-shot baselines (full-catalog ranking, unjudged = irrelevant)",
        "",
        f"{args.folds}-fold query-level CV (seed 0); mean over folds with the 95 % t-interval. "
        "Gains Exact 2 / Partial 1. `judged` = judged-only variant; `exact` = Exact-only gains.",
        "",
        "| data | text | retriever | NDCG@10 | 95% CI | Recall@100 | MRR@10 | MAP@100 "
        "| NDCG@10 judged | NDCG@10 exact |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for data, choice, retriever, m, j, e in rows:
        lo, hi = m["ndcg@10"]["ci95"]
        exact = f"{e['ndcg@10']['mean']:.4f}" if e else "-"
        lines.append(
            f"| {data} | {choice} | {retriever} | **{m['ndcg@10']['mean']:.4f}** | "
            f"[{lo:.3f}, {hi:.3f}] | {m['recall@100']['mean']:.4f} | {m['mrr@10']['mean']:.4f} | "
            f"{m['map@100']['mean']:.4f} | {j['ndcg@10']['mean']:.4f} | {exact} |"
        )
    lines += [
        "",
        "Product text chosen on validation queries only (each fold's validation queries are "
        f"{VALIDATION_FRACTION:.0%} of its training side, carved as `shopaug run` carves them; "
        "the choice never sees a test query, `eval.selection.choose_per_fold`): the choice "
        "per fold, then test NDCG@10 over folds of the validation-chosen text and of each "
        "fixed choice.",
        "",
        "| data | retriever | chosen per fold | test NDCG@10 chosen | "
        + " | ".join(TEXT_CHOICES)
        + " |",
        "|---|---|---|---|" + "---|" * len(TEXT_CHOICES),
    ]
    for data in datasets:
        for retriever in args.retrievers.split(","):
            choices, fixed, chosen = text_choice_on_validation(
                data, args.out, retriever, args.folds
            )
            lines.append(
                f"| {data} | {retriever} | {', '.join(choices)} | **{chosen:.4f}** | "
                + " | ".join(f"{fixed[c]:.4f}" for c in TEXT_CHOICES)
                + " |"
            )
    speeds = {
        choice: encoding_throughput(datasets[-1], fields) for choice, fields in TEXT_CHOICES.items()
    }
    lines += [
        "",
        f"MiniLM encoding throughput on {datasets[-1]} (600 products, batch 64, no cache): "
        + ", ".join(f"{choice} {speed:.0f} products/s" for choice, speed in speeds.items())
        + ".",
    ]
    (args.out / "summary.json").write_text(
        json.dumps({"rows": [r[:3] for r in rows], "speeds": speeds}, indent=1)
    )
    write_section(
        "relevance",
        invocation(),
        "\n".join(lines),
    )


if __name__ == "__main__":
    main()
