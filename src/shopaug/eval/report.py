"""One self-contained ``report.html`` from a run's metrics.json: a Jinja2 page, matplotlib charts.

The page loads nothing: CSS is inline, charts are matplotlib figures written as inline SVG, there
is no script, and a Content-Security-Policy forbids every network fetch, so the file opens the
same offline, in a CI artifact or attached to an e-mail. The template
(``eval/templates/report.html.j2``) autoescapes everything; row and dataset names come from
user configs. Tables sit in a box that scrolls sideways inside its card when they are wider than
it, and long row names wrap.

Why one module of about 650 lines: checking the payload, building its tables and drawing its
charts all follow the one metrics.json schema below, and nothing else draws charts yet. The chart
helpers (``_svg``, ``_hbar_chart``, ``_line_chart``) share nothing with the rest but the colours,
so they are the part to move to ``eval/charts.py`` when a second page needs them.

Input (the metrics.json payload of ``shopaug run``). Only ``dataset`` is required; every other
entry is optional, its section then says "not measured in this run", and keys not listed here
are ignored::

    {"dataset": str, "retriever": str, "folds": int, "trained_folds": int,
     "selected": {"system": str, "by": "validation ndcg@10", "validation": {metric: float}},
     "metrics": {metric: {"mean": float, "ci95": [lo, hi], "per_fold": [float, ...]}},
     "ablation": [{"name": str, "kind": "baseline" | "fine-tune" | "augmented" | "fusion"
                   | "reranker", "metrics": {...as above...}, "bootstrap_ci95": {metric: [lo, hi]},
                   "validation": {metric: float}, "p_value_vs_plain_fine_tune": float | None,
                   "p_value_vs_zero_shot_hybrid": ..., "p_value_vs_bm25": ...,
                   "p_value_vs_zero_shot": ..., "epochs": int, "steps": int,
                   "train_seconds_per_fold": float, "examples": int}],
     "segments": {"head": {"bm25 ndcg@10": float, "queries": float, ...}, "tail": {...}},
     "curves": {row: [{"step": int, "epoch": int, "loss": float, "val_ndcg@10": float | None}]},
     "audit": [{"method": str, "negatives": int, "fn_rate_exact": float,
                "fn_rate_exact_or_partial": float, "tail_share": float}],
     "reranker": {"served": bool, "validation_first_stage": float, "validation_reranked": float},
     "manifest": {...}}

Sections (``<section id=...>``): ``summary``, ``metrics``, ``ablation``, ``segments``, ``curves``,
``audit``, ``reranker``, ``manifest``. Charts are ``<svg data-plot=...>`` elements with a
``<title>``: ``ablation``, ``segments``, ``training-loss``, one ``validation-<metric>`` per
``val_<metric>`` key of the curves, and ``audit``.

Example:
    >>> import tempfile, pathlib
    >>> report = {"dataset": "wands", "retriever": "bm25", "folds": 1,
    ...           "metrics": {"ndcg@10": {"mean": 0.4, "ci95": [None, None], "per_fold": [0.4]}}}
    >>> render_report(report, pathlib.Path(tempfile.mkdtemp())).name
    'report.html'
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import matplotlib
from markupsafe import Markup, escape
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from shopaug.errors import DataError

logger = logging.getLogger(__name__)

NOT_MEASURED = "not measured in this run"
SELECTION_NOTE = "chosen on validation queries; test score reported once"
PRIMARY_METRIC = "ndcg@10"
KIND_COLORS = {
    "baseline": "#8C8C8C",
    "fine-tune": "#0072B2",
    "augmented": "#009E73",
    "fusion": "#E69F00",
    "reranker": "#CC79A7",
}
OTHER_COLOR = "#56B4E9"
SERIES_COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
P_VALUES = {
    "p_value_vs_plain_fine_tune": "p vs plain fine-tune",
    "p_value_vs_zero_shot_hybrid": "p vs zero-shot hybrid",
    "p_value_vs_bm25": "p vs BM25",
    "p_value_vs_zero_shot": "p vs zero-shot",
}
TRAINING_FIELDS = {  # one "training" cell: the first line, then the rest as small lines
    "steps": "{:g} steps",
    "epochs": "{:g} epochs",
    "train_seconds_per_fold": "{:.1f} s / fold",
    "examples": "{:,.0f} examples",
}
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


# --- values ----------------------------------------------------------------------------------


def _number(value: object) -> float | None:
    """A finite float, or None for None/NaN/inf/non-numbers."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


SCORE, COUNT, RATE = "{:.4f}", "{:g}", "{:.1%}"


def _fmt(value: object, form: str = SCORE) -> str:
    number = _number(value)
    return "n/a" if number is None else form.format(number)


def _fmt_p(value: object) -> str:
    number = _number(value)
    if number is None:
        return "n/a"
    return f"{number:.1e}" if 0 < number < 1e-4 else f"{number:.4f}"


def _interval(pair: object) -> tuple[float, float] | None:
    if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
        return None
    low, high = _number(pair[0]), _number(pair[1])
    return None if low is None or high is None else (low, high)


def _fmt_interval(pair: object, digits: int = 4) -> str:
    interval = _interval(pair)
    return "n/a" if interval is None else f"[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def _is_metric(name: str) -> bool:
    """Metric keys are named ``...@k``; others (e.g. ``queries``) are counts."""
    return "@" in name


# --- validation ------------------------------------------------------------------------------


def _check_summary(where: str, summary: object) -> None:
    if not isinstance(summary, Mapping) or "mean" not in summary:
        raise DataError(f"expected {{'mean', 'ci95', 'per_fold'}}, got {summary!r}", field=where)
    mean = summary["mean"]
    if mean is not None and (isinstance(mean, bool) or not isinstance(mean, int | float)):
        raise DataError(f"mean must be a number, got {mean!r}", field=where)
    ci95 = summary.get("ci95")
    if ci95 is not None and (not isinstance(ci95, Sequence) or len(ci95) != 2):
        raise DataError(f"ci95 must be [low, high], got {ci95!r}", field=where)
    per_fold = summary.get("per_fold", [])
    if not isinstance(per_fold, Sequence) or isinstance(per_fold, str):
        raise DataError(f"per_fold must be a list of numbers, got {per_fold!r}", field=where)


def _check_metrics(where: str, metrics: object) -> None:
    if not isinstance(metrics, Mapping):
        raise DataError(f"expected an object of metric summaries, got {metrics!r}", field=where)
    for name, summary in metrics.items():
        _check_summary(f"{where}.{name}", summary)


def _check_rows(where: str, rows: object, key: str | None = None) -> None:
    """A list of objects, each with ``key`` when given."""
    if not isinstance(rows, list):
        raise DataError(f"expected a list, got {type(rows).__name__}", field=where)
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping) or (key is not None and key not in row):
            wanted = "an object" if key is None else f"an object with a {key!r}"
            raise DataError(f"expected {wanted}, got {row!r}", field=f"{where}[{index}]")


def _check_objects(where: str, parent: Mapping[str, Any], keys: Sequence[str]) -> None:
    for key in keys:
        if parent.get(key) is not None and not isinstance(parent[key], Mapping):
            found = type(parent[key]).__name__
            raise DataError(f"expected an object, got {found}", field=f"{where}{key}")


def _validate(report: Mapping[str, Any]) -> None:
    if not isinstance(report.get("dataset"), str):
        raise DataError("the report needs a 'dataset' name (a string)", field="dataset")
    for key, kind in (("retriever", str), ("folds", int), ("trained_folds", int)):
        value = report.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise DataError(f"expected {kind.__name__}, got {type(value).__name__}", field=key)
    _check_objects("", report, ("metrics", "selected", "segments", "curves", "reranker"))
    _check_objects("", report, ("manifest",))
    _check_metrics("metrics", report.get("metrics") or {})
    if report.get("ablation") is not None:
        _check_rows("ablation", report["ablation"], "name")
        for index, row in enumerate(report["ablation"]):
            _check_objects(f"ablation[{index}].", row, ("validation", "bootstrap_ci95"))
            _check_metrics(f"ablation[{index}].metrics", row.get("metrics") or {})
    if report.get("audit") is not None:
        _check_rows("audit", report["audit"], "method")
    _check_objects("segments.", report.get("segments") or {}, list(report.get("segments") or {}))
    for name, points in (report.get("curves") or {}).items():
        _check_rows(f"curves.{name}", points)
    if report.get("selected"):
        if not isinstance(report["selected"].get("system"), str):
            raise DataError("expected the selected system's name", field="selected.system")
        _check_objects("selected.", report["selected"], ("validation",))


# --- charts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Series:
    """One set of horizontal bars: a value (None: no bar) and an optional interval per label."""

    name: str
    values: Sequence[float | None]
    colors: Sequence[str]
    intervals: Sequence[tuple[float, float] | None] = ()


def _at(intervals: Sequence[tuple[float, float] | None], index: int) -> tuple[float, float] | None:
    return intervals[index] if index < len(intervals) else None


def _wrap(label: str, width: int = 32) -> str:
    return "\n".join(textwrap.wrap(label, width, break_long_words=True) or [""])


def _svg(figure: Figure, plot: str, title: str) -> Markup:
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


def _hbar_chart(
    plot: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[_Series],
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
        return _svg(figure, plot, title)


def _line_chart(
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
        return _svg(figure, plot, title)


# --- tables ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, small lines under it (intervals) and a CSS class."""

    text: str
    notes: tuple[str, ...] = ()
    css: str = "num"


@dataclass
class Table:
    caption: str
    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    row_css: list[str] = field(default_factory=list)


def _union(mappings: Sequence[Mapping[str, Any]]) -> list[str]:
    names: list[str] = []
    for mapping in mappings:
        names += [name for name in mapping if name not in names]
    return names


def _metrics_table(metrics: Mapping[str, Mapping[str, Any]], folds: int | None) -> Table:
    width = max([0, *(len(s.get("per_fold") or []) for s in metrics.values())])
    table = Table(
        f"Test queries: mean over {folds or 'the'} query-level fold(s); the 95% interval is "
        "Student t over the fold means (n/a with one fold).",
        ["metric", "mean", "95% CI", *(f"fold {i + 1}" for i in range(width))],
    )
    for name, summary in metrics.items():
        per_fold = list(summary.get("per_fold") or [])
        table.rows.append(
            [Cell(name, css="name"), Cell(_fmt(summary["mean"]))]
            + [Cell(_fmt_interval(summary.get("ci95")))]
            + [Cell(_fmt(value)) for value in per_fold + [None] * (width - len(per_fold))]
        )
    return table


def _ablation_table(rows: Sequence[Mapping[str, Any]], selected: str | None) -> Table:
    metrics = _union([row.get("metrics") or {} for row in rows])
    validation = _union([row.get("validation") or {} for row in rows])
    present = {key for row in rows for key, value in row.items() if _number(value) is not None}
    kinds = any(row.get("kind") for row in rows)
    p_values = [key for key in P_VALUES if key in present]
    trained = any(key in present for key in TRAINING_FIELDS)
    table = Table(
        "Test cells: mean over folds, then the 95% interval over folds (Student t) and, "
        "marked boot, over queries (bootstrap). p-values come from paired tests over queries; "
        "bold below 0.05 (not corrected for multiple comparisons).",
        ["system", *(["kind"] if kinds else []), *(f"validation {m}" for m in validation)]
        + metrics
        + [P_VALUES[key] for key in p_values]
        + (["training"] if trained else []),
    )
    for row in rows:
        summaries = row.get("metrics") or {}
        bootstrap = row.get("bootstrap_ci95") or {}
        cells = [Cell(str(row["name"]), css="name")]
        cells += [Cell(str(row.get("kind") or ""), css="text")] if kinds else []
        cells += [Cell(_fmt((row.get("validation") or {}).get(m))) for m in validation]
        for metric in metrics:
            summary = summaries.get(metric) or {}
            notes = (
                [_fmt_interval(summary.get("ci95"), 3)] if _interval(summary.get("ci95")) else []
            )
            if _interval(bootstrap.get(metric)):
                notes.append("boot " + _fmt_interval(bootstrap.get(metric), 3))
            cells.append(Cell(_fmt(summary.get("mean")), tuple(notes)))
        for key in p_values:
            p_value = _number(row.get(key))
            significant = p_value is not None and p_value < 0.05
            cells.append(Cell(_fmt_p(p_value), css="num significant" if significant else "num"))
        if trained:
            lines = [
                form.format(row[key])
                for key, form in TRAINING_FIELDS.items()
                if _number(row.get(key)) is not None
            ]
            cells.append(Cell(lines[0], tuple(lines[1:])) if lines else Cell("n/a"))
        table.rows.append(cells)
        table.row_css.append("selected" if row["name"] == selected else "")
    return table


def _ablation_chart(rows: Sequence[Mapping[str, Any]], selected: str | None) -> Markup | None:
    metric = PRIMARY_METRIC
    if not any(metric in (row.get("metrics") or {}) for row in rows):
        metric = next(iter(_union([row.get("metrics") or {} for row in rows])), "")
    if not metric:
        return None
    values, intervals, colors, labels = [], [], [], []
    for row in rows:
        summary = (row.get("metrics") or {}).get(metric) or {}
        interval = _interval(summary.get("ci95")) or _interval(
            (row.get("bootstrap_ci95") or {}).get(metric)
        )
        values.append(_number(summary.get("mean")))
        intervals.append(interval)
        colors.append(KIND_COLORS.get(str(row.get("kind")), OTHER_COLOR))
        labels.append(str(row["name"]) + (" (selected)" if row["name"] == selected else ""))
    kinds = _union([{str(row.get("kind")): None} for row in rows if row.get("kind")])
    return _hbar_chart(
        "ablation",
        f"Test {metric}: mean with 95% interval",
        labels,
        [_Series(metric, values, colors, intervals)],
        axis_label=f"{metric} on test queries",
        legend=[(kind, KIND_COLORS.get(kind, OTHER_COLOR)) for kind in kinds],
        bold=[i for i, row in enumerate(rows) if row["name"] == selected],
    )


def _segments_parts(segments: Mapping[str, Mapping[str, Any]]) -> tuple[Table, Markup | None]:
    names = _union(list(segments.values()))
    table = Table(
        "Queries split by the popularity of their relevant products.", ["segment", *names]
    )
    for segment, values in segments.items():
        table.rows.append(
            [Cell(str(segment), css="name")]
            + [Cell(_fmt(values.get(n), SCORE if _is_metric(n) else COUNT)) for n in names]
        )
    charted = [name for name in names if _is_metric(name)]  # counts stay in the table
    if not charted:
        return table, None
    series = [
        _Series(str(segment), [_number(values.get(n)) for n in charted], [color])
        for segment, values, color in zip(segments, segments.values(), SERIES_COLORS)
    ]
    legend = [(s.name, s.colors[0]) for s in series]
    chart = _hbar_chart(
        "segments", "Head vs tail queries", charted, series, axis_label="score", legend=legend
    )
    return table, chart


def _curve_charts(curves: Mapping[str, Any]) -> list[Markup]:
    keys = _union([p for points in curves.values() for p in points if isinstance(p, Mapping)])
    metric_keys = [key for key in keys if key.startswith("val_")]
    x_key = "step" if "step" in keys else "epoch"
    charts = []
    for key in [*metric_keys, "loss"]:
        lines = {
            str(name): [
                (float(p[x_key]), float(p[key]))
                for p in points
                if _number(p.get(x_key)) is not None and _number(p.get(key)) is not None
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
        charts.append(_line_chart(plot, title, lines, x_label=x_key, y_label=label))
    return charts


def _audit_parts(audit: Sequence[Mapping[str, Any]]) -> tuple[Table, Markup]:
    table = Table(
        "Among mined negatives whose pair humans judged, the share judged relevant (false "
        "negatives): Exact only, or Exact or Partial. Tail share: negatives from the catalog's "
        "tail (outside the most popular 20 %).",
        ["method", "negatives", "FN rate (exact)", "FN rate (exact or partial)", "tail share"],
    )
    labels = []
    for row in audit:
        table.rows.append(
            [Cell(str(row["method"]), css="name"), Cell(_fmt(row.get("negatives"), COUNT))]
            + [
                Cell(_fmt(row.get(key), RATE))
                for key in ("fn_rate_exact", "fn_rate_exact_or_partial")
            ]
            + [Cell(_fmt(row.get("tail_share"), RATE))]
        )
        labels.append(str(row["method"]))
    series = [
        _Series(name, [_number(row.get(key)) for row in audit], [color])
        for (name, key), color in zip(
            (("exact", "fn_rate_exact"), ("exact or partial", "fn_rate_exact_or_partial")),
            SERIES_COLORS,
        )
    ]
    legend = [(s.name, s.colors[0]) for s in series]
    chart = _hbar_chart(
        "audit",
        "False-negative rate of mined negatives",
        labels,
        series,
        axis_label="false-negative rate",
        legend=legend,
        percent=True,
    )
    return table, chart


# --- page ------------------------------------------------------------------------------------


@functools.cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("shopaug.eval", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template("report.html.j2")


def _selection(report: Mapping[str, Any]) -> dict[str, Any]:
    selected = report.get("selected") or {}
    metrics = report.get("metrics") or {}
    headline = metrics.get(PRIMARY_METRIC) or next(iter(metrics.values()), None)
    headline_name = PRIMARY_METRIC if PRIMARY_METRIC in metrics else next(iter(metrics), "")
    return {
        "system": selected.get("system") or report.get("retriever") or "",
        "from_validation": bool(selected),
        "by": str(selected.get("by") or ""),
        "validation": [
            (str(name), _fmt(value)) for name, value in (selected.get("validation") or {}).items()
        ],
        "test": None
        if headline is None
        else (headline_name, _fmt(headline["mean"]), _fmt_interval(headline.get("ci95"))),
    }


def _reranker_rows(reranker: Mapping[str, Any]) -> list[tuple[str, str]]:
    served = reranker.get("served")
    return [
        ("served", "n/a" if served is None else ("yes" if served else "no")),
        ("validation score, first stage", _fmt(reranker.get("validation_first_stage"))),
        ("validation score, reranked", _fmt(reranker.get("validation_reranked"))),
    ]


def report_html(report: Mapping[str, Any]) -> str:
    """The report page as a string (see the module docstring for the input schema).

    Raises:
        DataError: An entry has the wrong shape; names the field.
    """
    _validate(report)
    selection = _selection(report)
    metrics = report.get("metrics") or {}
    ablation = report.get("ablation") or []
    chosen = selection["system"] if selection["from_validation"] else None
    segments, segments_chart = (
        _segments_parts(report["segments"]) if report.get("segments") else (None, None)
    )
    audit, audit_chart = _audit_parts(report["audit"]) if report.get("audit") else (None, None)
    reranker = report.get("reranker") or {}
    manifest = report.get("manifest")
    return _template().render(
        title=f"shopaug report: {selection['system'] or 'run'} on {report['dataset']}",
        not_measured=NOT_MEASURED,
        selection_note=SELECTION_NOTE,
        run=[
            ("dataset", report["dataset"]),
            ("folds", _fmt(report.get("folds"), COUNT)),
            ("trained folds", _fmt(report.get("trained_folds"), COUNT)),
        ],
        selection=selection,
        metrics=_metrics_table(metrics, report.get("folds")) if metrics else None,
        ablation=_ablation_table(ablation, chosen) if ablation else None,
        ablation_chart=_ablation_chart(ablation, chosen) if ablation else None,
        segments=segments,
        segments_chart=segments_chart,
        curves=_curve_charts(report.get("curves") or {}),
        audit=audit,
        audit_chart=audit_chart,
        reranker=_reranker_rows(reranker) if reranker else None,
        manifest=json.dumps(manifest, indent=2, sort_keys=True, default=str) if manifest else None,
    )


def render_report(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write the self-contained HTML report.

    Args:
        report: The metrics.json content (schema in the module docstring).
        path: The ``.html`` file to write, or an existing directory to write ``report.html``
            into. Parent folders are created.

    Returns:
        The path of the written file.

    Raises:
        DataError: An entry has the wrong shape; names the field. Nothing is written.
    """
    target = Path(path)
    if target.is_dir():
        target = target / "report.html"
    page = report_html(report)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    logger.info("wrote %s (%d bytes)", target, len(page))
    return target
