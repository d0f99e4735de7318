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
    """The ablation table the CLI prints after a run."""
    lines = [
        f"{result['dataset']}: {result['trained_folds']} of {result['folds']} folds trained",
        f"{'system':<36} {'valid':>6} {'test':>7}  {'95% CI':<14}  {'p vs plain':>10}  "
        f"{'p vs hybrid':>11}",
    ]
    for entry in result["ablation"]:
        ndcg = entry["metrics"]["ndcg@10"]
        interval = "[-, -]" if None in ndcg["ci95"] else "[{:.3f}, {:.3f}]".format(*ndcg["ci95"])
        valid = entry.get("validation", {}).get("ndcg@10")
        p0, p1 = entry.get("p_value_vs_plain_fine_tune"), entry.get("p_value_vs_zero_shot_hybrid")
        lines.append(
            f"{entry['name'][:36]:<36} {'-' if valid is None else f'{valid:.3f}':>6} "
            f"{ndcg['mean']:>7.4f}  {interval:<14}  {'-' if p0 is None else f'{p0:.3g}':>10}  "
            f"{'-' if p1 is None else f'{p1:.3g}':>11}"
        )
    selected = result["selected"]
    lines.append(
        f"chosen on validation queries: {selected['system']} "
        f"(test NDCG@10 {result['metrics']['ndcg@10']['mean']:.4f})"
    )
    return lines
