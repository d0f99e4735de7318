"""Write the recommendation table of a ``shopaug run retail-*`` directory into RESULTS.md.

Usage:
    shopaug run retail-full --out benchmarks/out/retail-full
    python benchmarks/recommend.py benchmarks/out/retail-full --command "shopaug run ..."

Every row was measured in the same run, on the same customers; intervals are 95 % percentile
bootstrap intervals over customers, and Δ is the paired bootstrap difference in Recall@20
against repeat purchase (the baseline to beat in retail).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from results_file import write_section


def fmt(value: object, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def interval(summary: dict) -> str:
    low, high = summary.get("ci95", [None, None])
    if low is None:
        return fmt(summary.get("mean"))
    return f"{summary['mean']:.4f} [{low:.4f}, {high:.4f}]"


def delta(entry: dict) -> str:
    versus = entry.get("vs_reference")
    if not versus:
        return "(reference)"
    low, high = versus["ci95"]
    return f"{versus['difference']:+.4f} [{low:+.4f}, {high:+.4f}] p={versus['p_value']:.2g}"


def verdict(entry: dict) -> str:
    versus = entry.get("vs_reference")
    if not versus:
        return ""
    low, high = versus["ci95"]
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no clear difference"


def table(metrics: dict) -> list[str]:
    k = metrics["k"]
    head = (
        f"| system | valid R@{k} | test R@{k} [95% CI] | NDCG@{k} [95% CI] | MRR | "
        f"new-item R@{k} (n={{n}}) | tail@{k} | coverage@{k} | Gini@{k} | "
        f"Δ R@{k} vs repeat purchase | |"
    )
    n_new = next(iter(metrics["systems"]))["new_item_customers"]
    lines = [head.format(n=n_new), "|" + "---|" * 11]
    for entry in metrics["systems"]:
        test = entry["test"]
        name = entry["name"]
        if name == metrics["selected"]["system"]:
            name = f"**{name}** (chosen on validation)"
        lines.append(
            f"| {name} | {fmt(entry['validation'][f'recall@{k}']['mean'])} | "
            f"{interval(test[f'recall@{k}'])} | {interval(test[f'ndcg@{k}'])} | "
            f"{fmt(test['mrr']['mean'])} | {interval(test[f'new_recall@{k}'])} | "
            f"{fmt(test[f'tail_share@{k}']['mean'], 3)} | "
            f"{fmt(test[f'coverage@{k}']['mean'], 3)} | "
            f"{fmt(test[f'gini@{k}']['mean'], 3)} | {delta(entry)} | {verdict(entry)} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--command", required=True, help="The exact command that made run_dir.")
    parser.add_argument("--section", default="recommend-online-retail")
    parser.add_argument("--note", default="", help="A sentence added under the table.")
    args = parser.parse_args()
    metrics = json.loads((args.run_dir / "metrics.json").read_text("utf-8"))
    manifest = json.loads((args.run_dir / "manifest.json").read_text("utf-8"))
    data = manifest["data"]
    lines = [
        "## Recommendation: next basket on UCI Online Retail",
        "",
        f"Cut {metrics['cut']} (validation cut {metrics['validation_cut']}); "
        f"{metrics['customers']['test']} test customers (their first invoice after the cut), "
        f"{metrics['customers']['validation']} validation customers; catalog "
        f"{metrics['catalog']['test']} items of which {metrics['new_items']['test']} are new "
        "(first sold after the cut). Cleaning: "
        + ", ".join(f"{k} {v}" for k, v in data["cleaning"].items())
        + ".",
        "",
        *table(metrics),
        "",
        f"Served (the best servable system on validation): "
        f"{metrics.get('served', {}).get('system', '-')}. "
        "Two-tower rows train on invoices before the validation cut and early-stop on "
        "validation baskets; baselines are fitted on everything before the test cut.",
    ]
    if args.note:
        lines += ["", args.note]
    timings = manifest.get("timings_s", {})
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())]
    write_section(args.section, args.command, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
