"""The run report's charts: matplotlib figures written as inline ``<svg data-plot=...>``.

Each chart is an ``<svg>`` element with a ``<title>`` and a ``data-plot`` name (``ablation``,
``segments``, ``training-loss``, ``validation-<metric>``, ``audit``), ready to drop into the
page of :mod:`shopaug.eval.report`. Text stays text (``svg.fonttype: none``), so the browser
measures it and the page escapes it; a ``$`` in a row name is not mathtext; ids get a per-chart
prefix so several charts share one page; the same input gives the same bytes.

Horizontal bars carry ids ``bar-<series>-<row>`` and error bars ``error-bars-<series>``, which
the tests read.

Example:
    >>> chart = hbar_chart("demo", "Demo", ["a", "b"], [Series("x", [0.2, 0.4], ["#0072B2"])],
    ...                    axis_label="score")
    >>> chart.startswith('<svg data-plot="demo"')
    True
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
from markupsafe import Markup, escape
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

KIND_COLORS = {
    "baseline": "#8C8C8C",
    "fine-tune": "#0072B2",
    "augmented": "#009E73",
    "fusion": "#E69F00",
    "reranker": "#CC79A7",
}
OTHER_COLOR = "#56B4E9"
SERIES_COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
_CHART_STYLE: Any = {
    "svg.fonttype": "none",  # real <text>: searchable, escaped, measured by the browser test
    "svg.hashsalt": "shopaug-report",  # the same input gives the same file
    "text.parse_math": False,  # a "$" in a row name is text, not mathtext
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_CHART_WIDTH = 7.5  # inches; 720 px at 96 dpi, scaled down by CSS in narrower cards
_SVG_REFERENCE = re.compile(r'(\bid="|url\(#|href="#)')


# --- values (shared with the report's tables) ------------------------------------------------


def finite_number(value: object) -> float | None:
    """A finite float, or None for None/NaN/inf/booleans/non-numbers."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def interval(pair: object) -> tuple[float, float] | None:
    """``(low, high)`` from a ``[low, high]`` pair of finite numbers, else None."""
    if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
        return None
    low, high = finite_number(pair[0]), finite_number(pair[1])
    return None if low is None or high is None else (low, high)


def ordered_keys(mappings: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every key of ``mappings``, in order of first appearance."""
    names: list[str] = []
    for mapping in mappings:
        names += [name for name in mapping if name not in names]
    return names


# --- drawing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One set of horizontal bars: a value (None: no bar) and an optional interval per label."""

    name: str
    values: Sequence[float | None]
    colors: Sequence[str]
    intervals: Sequence[tuple[float, float] | None] = ()


def _at(intervals: Sequence[tuple[float, float] | None], index: int) -> tuple[float, float] | None:
    return intervals[index] if index < len(intervals) else None


def _wrap(label: str, width: int = 32) -> str:
    return "\n".join(textwrap.wrap(label, width, break_long_words=True) or [""])


def svg_markup(figure: Figure, plot: str, title: str) -> Markup:
    """The figure as an inline ``<svg data-plot=...>``; ids get a per-chart prefix so several
    charts can share one page."""
    buffer = io.StringIO()
    metadata = {"Creator": None, "Date": None, "Format": None, "Type": None}
    figure.savefig(buffer, format="svg", metadata=metadata)
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    prefix = re.sub(r"[^A-Za-z0-9_-]", "-", plot) + "--"
    text = _SVG_REFERENCE.sub(lambda match: match.group(1) + prefix, text)
    opening = text.index(">") + 1
    head = text[:opening].replace(
        "<svg ", f'<svg data-plot="{escape(plot)}" role="img" aria-label="{escape(title)}" ', 1
    )
    return Markup(f"{head}<title>{escape(title)}</title>{text[opening:]}")


def hbar_chart(
    plot: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    axis_label: str,
    legend: Sequence[tuple[str, str]] = (),
    percent: bool = False,
    bold: Sequence[int] = (),
) -> Markup:
    """Horizontal (grouped) bars, one row per label: long labels wrap instead of colliding."""
    wrapped = [_wrap(label) for label in labels]
    lines = max(label.count("\n") + 1 for label in wrapped)
    per_row = max(0.28 * len(series), 0.17 * lines) + 0.12  # inches
    height = 1.1 + per_row * len(labels) + (0.3 if legend else 0.0)
    with matplotlib.rc_context(_CHART_STYLE):
        figure = Figure(figsize=(_CHART_WIDTH, height), layout="constrained")
        axes = figure.add_subplot()
        bar_height = 0.8 / len(series)
        for index, bars in enumerate(series):
            offset = (index - (len(series) - 1) / 2) * bar_height
            shown = [
                (i, value, bars.colors[i % len(bars.colors)], _at(bars.intervals, i))
                for i, value in enumerate(bars.values)
                if value is not None
            ]
            drawn = axes.barh(
                [i + offset for i, _, _, _ in shown],
                [value for _, value, _, _ in shown],
                height=bar_height * 0.9,
                color=[color for _, _, color, _ in shown],
            )
            for patch, (i, _, _, _) in zip(drawn.patches, shown, strict=True):
                patch.set_gid(f"bar-{index}-{i}")  # series, row: tests read bars by these ids
            spans = [(i + offset, value, ci) for i, value, _, ci in shown if ci is not None]
            if spans:
                low = [max(value - ci[0], 0.0) for _, value, ci in spans]
                high = [max(ci[1] - value, 0.0) for _, value, ci in spans]
                xs, ys = [value for _, value, _ in spans], [y for y, _, _ in spans]
                errors = axes.errorbar(
                    xs, ys, xerr=[low, high], fmt="none", ecolor="#222", capsize=3
                )
                for collection in errors.lines[2]:
                    collection.set_gid(f"error-bars-{index}")
        axes.set_yticks(range(len(labels)), wrapped)
        for row in bold:
            axes.get_yticklabels()[row].set_fontweight("bold")
        axes.invert_yaxis()  # first row on top, as in the table
        axes.set_xlim(left=min(0.0, axes.get_xlim()[0]))
        axes.grid(axis="x", color="#E5E8EC")
        axes.set_axisbelow(True)
        axes.set_xlabel(axis_label)
        if percent:
            axes.xaxis.set_major_formatter(PercentFormatter(1.0))
        axes.set_title(title, loc="left", fontweight="bold")
        if legend:
            handles = [matplotlib.patches.Patch(color=color, label=name) for name, color in legend]
            figure.legend(handles=handles, loc="outside lower center", ncols=len(handles))
        return svg_markup(figure, plot, title)


def line_chart(
    plot: str,
    title: str,
    lines: Mapping[str, Sequence[tuple[float, float]]],
    *,
    x_label: str,
    y_label: str,
) -> Markup:
    """One line with markers per training row; the legend sits under the axes."""
    columns = 2 if len(lines) > 3 else len(lines)
    legend_rows = math.ceil(len(lines) / columns)
    with matplotlib.rc_context(_CHART_STYLE):
        figure = Figure(figsize=(_CHART_WIDTH, 3.6 + 0.25 * legend_rows), layout="constrained")
        axes = figure.add_subplot()
        for index, (name, points) in enumerate(lines.items()):
            axes.plot(
                [x for x, _ in points],
                [y for _, y in points],
                marker="o",
                markersize=3.5,
                color=SERIES_COLORS[index % len(SERIES_COLORS)],
                linestyle=("-", "--", ":")[index // len(SERIES_COLORS) % 3],
                label=_wrap(name, 40),
            )
        axes.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 5, 10], integer=True))
        axes.grid(color="#E5E8EC")
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        axes.set_title(title, loc="left", fontweight="bold")
        figure.legend(loc="outside lower center", ncols=columns)
        return svg_markup(figure, plot, title)


# --- the report's charts ---------------------------------------------------------------------


def ablation_chart(
    rows: Sequence[Mapping[str, Any]], selected: str | None, *, metric: str
) -> Markup | None:
    """One bar per ablation row (in the table's order) for ``metric`` (else the first metric
    any row has), coloured by kind, with the fold interval or else the bootstrap one."""
    if not any(metric in (row.get("metrics") or {}) for row in rows):
        metric = next(iter(ordered_keys([row.get("metrics") or {} for row in rows])), "")
    if not metric:
        return None
    values, intervals, colors, labels = [], [], [], []
    for row in rows:
        summary = (row.get("metrics") or {}).get(metric) or {}
        values.append(finite_number(summary.get("mean")))
        intervals.append(
            interval(summary.get("ci95")) or interval((row.get("bootstrap_ci95") or {}).get(metric))
        )
        colors.append(KIND_COLORS.get(str(row.get("kind")), OTHER_COLOR))
        labels.append(str(row["name"]) + (" (selected)" if row["name"] == selected else ""))
    kinds = ordered_keys([{str(row.get("kind")): None} for row in rows if row.get("kind")])
    return hbar_chart(
        "ablation",
        f"Test {metric}: mean with 95% interval",
        labels,
        [Series(metric, values, colors, intervals)],
        axis_label=f"{metric} on test queries",
        legend=[(kind, KIND_COLORS.get(kind, OTHER_COLOR)) for kind in kinds],
        bold=[i for i, row in enumerate(rows) if row["name"] == selected],
    )


def segments_chart(segments: Mapping[str, Mapping[str, Any]], metrics: Sequence[str]) -> Markup:
    """One series per segment (head, tail), one group of bars per metric."""
    series = [
        Series(str(segment), [finite_number(values.get(n)) for n in metrics], [color])
        for segment, values, color in zip(segments, segments.values(), SERIES_COLORS)
    ]
    legend = [(s.name, s.colors[0]) for s in series]
    return hbar_chart(
        "segments", "Head vs tail queries", metrics, series, axis_label="score", legend=legend
    )


def curve_charts(curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Markup]:
    """One line chart per ``val_<metric>`` key of the curves, then one of the training loss."""
    keys = ordered_keys([p for points in curves.values() for p in points])
    metric_keys = [key for key in keys if key.startswith("val_")]
    x_key = "step" if "step" in keys else "epoch"
    charts = []
    for key in [*metric_keys, "loss"]:
        lines = {
            str(name): [
                (float(p[x_key]), float(p[key]))
                for p in points
                if finite_number(p.get(x_key)) is not None and finite_number(p.get(key)) is not None
            ]
            for name, points in curves.items()
        }
        lines = {name: points for name, points in lines.items() if points}
        if not lines:
            continue
        if key == "loss":
            plot, title, label = "training-loss", "Training loss", "loss"
        else:
            metric = key.removeprefix("val_")
            plot, title, label = f"validation-{metric}", f"Validation {metric}", metric
        charts.append(line_chart(plot, title, lines, x_label=x_key, y_label=label))
    return charts


def audit_chart(audit: Sequence[Mapping[str, Any]]) -> Markup:
    """False-negative rates (Exact; Exact or Partial) of each method's mined negatives."""
    series = [
        Series(name, [finite_number(row.get(key)) for row in audit], [color])
        for (name, key), color in zip(
            (("exact", "fn_rate_exact"), ("exact or partial", "fn_rate_exact_or_partial")),
            SERIES_COLORS,
        )
    ]
    return hbar_chart(
        "audit",
        "False-negative rate of mined negatives",
        [str(row["method"]) for row in audit],
        series,
        axis_label="false-negative rate",
        legend=[(s.name, s.colors[0]) for s in series],
        percent=True,
    )
