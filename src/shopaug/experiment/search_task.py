"""The search task of ``shopaug run``: augment, train, evaluate and serve a product ranker."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shopaug.experiment import runner
from shopaug.experiment.config import RunConfig, parse_run_config


def parse_config(mapping: Mapping[str, Any], source: str) -> RunConfig:
    return parse_run_config(dict(mapping), source=source)


def run(config: RunConfig, out: Path, command: str) -> dict[str, Any]:
    # looked up at call time, so that a stand-in for runner.run_experiment (tests) is used
    return runner.run_experiment(config, out, command=command)


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """The ablation table the CLI prints after a run.

    The interval is the bootstrap interval of test NDCG@10 over the test queries
    (``bootstrap_ci95`` in metrics.json). Where a row has none, the t interval over folds
    stands in, clipped to [0, 1] (with few folds it can reach past 1) and marked ``*``.
    """
    lines = [
        f"{result['dataset']}: {result['trained_folds']} of {result['folds']} folds trained",
        f"{'system':<36} {'valid':>6} {'test':>7}  {'95% CI':<15}  {'p vs plain':>10}  "
        f"{'p vs hybrid':>11}",
    ]
    fold_intervals = False
    for entry in result["ablation"]:
        ndcg = entry["metrics"]["ndcg@10"]
        interval, from_folds = _ndcg_interval(entry)
        fold_intervals = fold_intervals or from_folds
        valid = entry.get("validation", {}).get("ndcg@10")
        p0, p1 = entry.get("p_value_vs_plain_fine_tune"), entry.get("p_value_vs_zero_shot_hybrid")
        lines.append(
            f"{entry['name'][:36]:<36} {'-' if valid is None else f'{valid:.3f}':>6} "
            f"{ndcg['mean']:>7.4f}  {interval:<15}  {'-' if p0 is None else f'{p0:.3g}':>10}  "
            f"{'-' if p1 is None else f'{p1:.3g}':>11}"
        )
    lines.append("95% CI: bootstrap over test queries (metrics.json also has the fold interval)")
    if fold_intervals:
        lines.append("* no bootstrap interval: t interval over folds, clipped to [0, 1]")
    selected = result["selected"]
    lines.append(
        f"chosen on validation queries: {selected['system']} "
        f"(test NDCG@10 {result['metrics']['ndcg@10']['mean']:.4f})"
    )
    return lines


def _ndcg_interval(entry: Mapping[str, Any]) -> tuple[str, bool]:
    """The printed 95% interval of a row's test NDCG@10, and whether it is the fold one."""
    bootstrap = (entry.get("bootstrap_ci95") or {}).get("ndcg@10")
    if bootstrap is not None:
        return "[{:.3f}, {:.3f}]".format(*bootstrap), False
    low, high = entry["metrics"]["ndcg@10"]["ci95"]
    if low is None or high is None:
        return "[-, -]", False
    return f"[{max(low, 0.0):.3f}, {min(high, 1.0):.3f}]*", True
