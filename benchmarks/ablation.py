"""Write the ablation table of a ``shopaug run`` directory into benchmarks/RESULTS.md.

Usage:
    shopaug run full --out benchmarks/out/full-wands-subset [--device cuda]
    python benchmarks/ablation.py benchmarks/out/full-wands-subset --command "shopaug run full ..."
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from results_file import write_section


def fmt(value: object, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if value >= 1e-3 else f"{value:.1e}"
    return str(value)


def _delta(entry: dict, key: str) -> str:
    versus = entry.get(f"vs_{key}")
    if not versus:
        return "-"
    lo, hi = versus["ci95"]
    return f"{versus['mean_difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] p={versus['p_value']:.2g}"


def _budget(entry: dict) -> str:
    if entry.get("steps") is None:
        return "-"
    return (
        f"{entry['epochs']:.0f} ep, {entry['steps']:.0f} steps, "
        f"{entry['groups']:.0f} groups, {entry['train_seconds_per_fold']:.0f} s"
    )


#: Paired comparisons shown as columns, when the run has the reference row (report.py's
#: REFERENCES keys): the sentence-transformers script and its BM25 fusion first.
DELTA_COLUMNS = (
    ("st_fine_tune", "Δ vs sentence-transformers fine-tune"),
    ("st_fine_tune_bm25", "Δ vs sentence-transformers + bm25"),
    ("plain_fine_tune", "Δ vs plain fine-tune"),
    ("zero_shot_hybrid", "Δ vs zero-shot hybrid"),
)


def table(metrics: dict) -> list[str]:
    """One line per system: test NDCG@10 over the folds, its intervals, the validation score
    that selection read, the paired differences against the reference rows the run has (the
    sentence-transformers fine-tune and its BM25 fusion, plain fine-tune, the zero-shot
    hybrid), and the training budget."""
    present = [
        (key, title)
        for key, title in DELTA_COLUMNS
        if any(row.get(f"vs_{key}") for row in metrics["ablation"])
    ]
    lines = [
        "| system | kind | valid NDCG@10 | **test NDCG@10** | per fold | 95% CI folds | 95% CI "
        "bootstrap | NDCG@10 Exact | Recall@100 | MRR@10 | "
        + " | ".join(title for _, title in present)
        + " | budget / fold |",
        "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(present) + "---|",
    ]
    for row in metrics["ablation"]:
        m = row["metrics"]
        ndcg = m["ndcg@10"]
        lo, hi = ndcg["ci95"]
        interval = "-" if lo is None else f"[{lo:.3f}, {hi:.3f}]"
        boot = row.get("bootstrap_ci95", {}).get("ndcg@10")
        boot_text = "-" if not boot else f"[{boot[0]:.3f}, {boot[1]:.3f}]"
        folds = ", ".join(f"{v:.3f}" for v in ndcg["per_fold"])
        name = row["name"]
        if name == metrics["selected"]["system"]:
            name = f"**{name}** (chosen)"
        exact = row.get("ndcg@10_exact", {}).get("mean")
        deltas = " | ".join(_delta(row, key) for key, _ in present)
        lines.append(
            f"| {name} | {row['kind']} | {fmt(row['validation']['ndcg@10'])} | "
            f"**{ndcg['mean']:.4f}** | {folds} | {interval} | {boot_text} | {fmt(exact)} | "
            f"{m['recall@100']['mean']:.4f} | {m['mrr@10']['mean']:.4f} | "
            f"{deltas} | {_budget(row)} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--command", required=True, help="the command that made the run")
    parser.add_argument("--section", default="ablation")
    parser.add_argument("--title", default="Ablation: which samples help")
    parser.add_argument(
        "--note", type=Path, help="a Markdown file whose text goes under the section's title"
    )
    args = parser.parse_args()
    metrics = json.loads((args.run_dir / "metrics.json").read_text())
    config_text = (args.run_dir / "config.yaml").read_text()
    config = yaml.safe_load(config_text)
    manifest = json.loads((args.run_dir / "manifest.json").read_text())
    trained, folds = metrics["trained_folds"], metrics["folds"]
    selected = metrics["selected"]
    reranker = metrics.get("reranker") or {}
    served = metrics.get("served") or {}
    lines = [
        f"## {args.title} ({metrics['dataset']})",
        "",
        *([args.note.read_text().strip(), ""] if args.note else []),
        f"{trained} of {folds} query-level folds, {metrics['queries']['test']} test queries "
        f"and {metrics['queries']['validation']} validation queries (carved from each fold's "
        f"training side) in all. Tower: `{metrics['tower']}`; training: "
        f"`{json.dumps(config['train'])}`, the same for every row. Test NDCG@10 is the mean over "
        "folds; Δ is the paired difference over the same test queries with its 95 % paired "
        "bootstrap interval and the paired t-test p-value. Selection (the chosen system, the "
        "convex fusion weight of each fold, the reranker gate) read validation queries only.",
        "",
        f"**Chosen on validation: {selected['system']}** (validation NDCG@10 "
        f"{selected['validation']['ndcg@10']:.4f}), test NDCG@10 "
        f"**{metrics['metrics']['ndcg@10']['mean']:.4f}**.",
        "",
    ]
    if reranker:
        lines += [
            f"Reranker ({config['reranker'].get('kind', 'cross-encoder')} over the top "
            f"{config['reranker']['top_k']} of "
            f"{reranker['first_stage']}): validation NDCG@10 {reranker['validation_reranked']:.4f} "
            f"against {reranker['validation_first_stage']:.4f} for its first stage, so it is "
            f"{'served' if reranker['served'] else 'not served'}.",
            "",
        ]
    if served.get("note"):
        lines += [f"Served `model/`: {served['note']}.", ""]
    elif served:
        lines += [
            f"Served `model/`: {served.get('row')} retrained on all {served.get('queries')} "
            f"judged queries for {served.get('epochs')} epoch(s) (the median of the folds' best "
            f"epochs){'; fusion ' + json.dumps(served['fusion']) if served.get('fusion') else ''}.",
            "",
        ]
    lines += [
        *table(metrics),
        "",
        "Head vs tail (test NDCG@10; a tail query's relevant products are mostly outside the "
        "most popular 20 % of the catalog):",
        "",
        "| segment | " + " | ".join(k for k in metrics["segments"]["head"]) + " |",
        "|---|" + "---|" * len(metrics["segments"]["head"]),
    ]
    for segment, values in metrics["segments"].items():
        lines.append(f"| {segment} | " + " | ".join(fmt(v) for v in values.values()) + " |")
    if metrics.get("audit"):
        lines += [
            "",
            "Audit of each source's negatives (fold 0, against the human labels; a negative "
            "judged Exact, and judged Exact or Partial; rates over judged negatives):",
            "",
            "| method | negatives | judged | FN rate Exact | FN rate Exact or Partial "
            "| tail share |",
            "|---|---|---|---|---|---|",
        ]
        for row in metrics["audit"]:
            lines.append(
                f"| {row['method']} | {row['negatives']} | {row['judged']} | "
                f"{fmt(row['fn_rate_exact'], 3)} | {fmt(row['fn_rate_exact_or_partial'], 3)} | "
                f"{fmt(row['tail_share'], 3)} |"
            )
    timings = manifest.get("timings_s", {})
    lines += [
        "",
        "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
        "",
        "<details><summary>config.yaml</summary>",
        "",
        "```yaml",
        config_text.strip(),
        "```",
        "</details>",
    ]
    write_section(args.section, args.command, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
