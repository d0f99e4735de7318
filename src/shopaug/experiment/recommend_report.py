"""``report.html`` of a recommendation run: every system with intervals, and a recall chart."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shopaug.eval import charts
from shopaug.eval.report import report_template


def _value(summary: Mapping[str, Any] | None) -> str:
    if not summary or summary.get("mean") is None:
        return "-"
    return f"{summary['mean']:.4f}"


def _with_interval(summary: Mapping[str, Any]) -> str:
    low, high = summary.get("ci95", [None, None])
    if low is None:
        return _value(summary)
    return f"{summary['mean']:.4f} [{low:.4f}, {high:.4f}]"


def _delta(entry: Mapping[str, Any], field: str = "vs_reference") -> str:
    versus = entry.get(field)
    if not versus:
        return "-"
    low, high = versus["ci95"]
    return f"{versus['difference']:+.4f} [{low:+.4f}, {high:+.4f}] p={versus['p_value']:.3g}"


def recommend_report_html(result: Mapping[str, Any]) -> str:
    """The report page of a ``metrics.json`` payload of the recommend task."""
    k = result["k"]
    metric = f"recall@{k}"
    columns = [
        "system",
        f"valid R@{k}",
        f"test R@{k} [95% CI]",
        f"NDCG@{k}",
        "MRR",
        f"new R@{k}",
        f"repeat R@{k}",
        f"explore R@{k}",
        f"repeat share@{k}",
        f"tail@{k}",
        f"coverage@{k}",
        f"Gini@{k}",
        f"Δ R@{k} vs reference",
        f"Δ R@{k} vs TIFU-KNN",
    ]
    selected = result["selected"]["system"]
    rows = []
    for entry in result["systems"]:
        test = entry["test"]
        rows.append(
            {
                "chosen": entry["name"] == selected,
                "cells": [
                    entry["name"],
                    _value(entry["validation"][metric]),
                    _with_interval(test[metric]),
                    _value(test[f"ndcg@{k}"]),
                    _value(test["mrr"]),
                    _value(test[f"new_recall@{k}"]),
                    _value(test.get(f"repeat_recall@{k}")),
                    _value(test.get(f"explore_recall@{k}")),
                    _value(test.get(f"repeat_share@{k}")),
                    _value(test[f"tail_share@{k}"]),
                    _value(test[f"coverage@{k}"]),
                    _value(test[f"gini@{k}"]),
                    _delta(entry),
                    _delta(entry, "vs_tifu_knn") if "vs_tifu_knn" in entry else "-",
                ],
            }
        )
    names = [entry["name"] for entry in result["systems"]]
    series = charts.Series(
        name=metric,
        values=[entry["test"][metric]["mean"] for entry in result["systems"]],
        colors=[
            charts.SERIES_COLORS[0]
            if e["kind"] in ("baseline", "repeat-aware")
            else charts.SERIES_COLORS[1]
            for e in result["systems"]
        ],
        intervals=[charts.interval(entry["test"][metric]["ci95"]) for entry in result["systems"]],
    )
    chart = charts.hbar_chart(
        "recall",
        f"Test {metric} (95% bootstrap CI)",
        names,
        [series],
        axis_label=metric,
        legend=[("baseline", charts.SERIES_COLORS[0]), ("two-tower", charts.SERIES_COLORS[1])],
    )
    served = (result.get("served") or {}).get("system")
    return report_template("recommend_report.html.j2").render(
        title="shopaug report: next-basket recommendation on online-retail",
        cut=result["cut"],
        validation_cut=result["validation_cut"],
        customers=result["customers"],
        catalog=result["catalog"],
        new_items=result["new_items"],
        metric=metric,
        reference=result["reference"],
        selected=selected,
        chart=chart,
        columns=columns,
        rows=rows,
        k=k,
        served=served,
    )


def render_recommend_report(result: Mapping[str, Any], path: str | Path) -> Path:
    """Write the self-contained HTML report to ``path``."""
    path = Path(path)
    path.write_text(recommend_report_html(result), "utf-8")
    return path
