"""Write the ablation table of a ``shopaug run`` directory into benchmarks/RESULTS.md.

Usage:
    shopaug run full --out benchmarks/out/full-wands-subset [--train-folds N]
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


def table(metrics: dict) -> list[str]:
    lines = [
        "| system | NDCG@10 | per fold | 95% CI | Recall@100 | MRR@10 | MAP@100 "
        "| p vs zero-shot | p vs BM25 | train s/fold |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in metrics["ablation"]:
        m = row["metrics"]
        ndcg = m["ndcg@10"]
        lo, hi = ndcg["ci95"]
        interval = "-" if lo is None else f"[{lo:.3f}, {hi:.3f}]"
        folds = ", ".join(f"{v:.3f}" for v in ndcg["per_fold"])
        lines.append(
            f"| {row['name']} | **{ndcg['mean']:.4f}** | {folds} | {interval} | "
            f"{m['recall@100']['mean']:.4f} | {m['mrr@10']['mean']:.4f} | "
            f"{m['map@100']['mean']:.4f} | {fmt(row.get('p_value_vs_zero_shot'), 3)} | "
            f"{fmt(row.get('p_value_vs_bm25'), 3)} | {fmt(row.get('train_seconds_per_fold'), 0)} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--command", required=True, help="the command that made the run")
    parser.add_argument("--section", default="ablation")
    args = parser.parse_args()
    metrics = json.loads((args.run_dir / "metrics.json").read_text())
    config = (args.run_dir / "config.yaml").read_text()
    trained, folds = metrics["trained_folds"], metrics["folds"]
    top_k = yaml.safe_load(config)["reranker"]["top_k"]
    lines = [
        f"## Ablation: which samples help ({metrics['dataset']})",
        "",
        f"Bi-encoder fine-tuned from all-MiniLM-L6-v2, one row per sample source, same step "
        f"budget, batch and seeds; full-catalog ranking; {trained} of {folds} query-level folds "
        f"trained (each row's NDCG@10 is the mean over those folds' test queries); p-values: "
        "paired t-test over the test queries against zero-shot MiniLM and BM25 measured in the "
        "same run. The reranker is a MiniLM cross-encoder trained on the best row's samples, "
        f"reranking that row's top {top_k}.",
        "",
        *table(metrics),
        "",
        "Head vs tail (NDCG@10; a tail query's relevant products are mostly outside the most "
        "popular 20 % of the catalog):",
        "",
        "| segment | " + " | ".join(k for k in metrics["segments"]["head"]) + " |",
        "|---|" + "---|" * len(metrics["segments"]["head"]),
    ]
    for segment, values in metrics["segments"].items():
        lines.append(f"| {segment} | " + " | ".join(fmt(v) for v in values.values()) + " |")
    lines += [
        "",
        "<details><summary>config.yaml</summary>",
        "",
        "```yaml",
        config.strip(),
        "```",
        "</details>",
    ]
    write_section(args.section, args.command, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
