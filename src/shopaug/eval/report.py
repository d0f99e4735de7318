"""One self-contained ``report.html`` from a run's metrics.json: tables and inline SVG charts.

The page loads nothing: CSS is inline, charts are SVG drawn here, there is no script, and a
Content-Security-Policy forbids every network fetch, so the file opens the same offline, in a CI
artifact or attached to an e-mail.

Input (the metrics.json schema; ``ablation``, ``segments``, ``curves`` and ``manifest`` may be
missing, and their sections then say "not measured in this run")::

    {"dataset": str, "retriever": str, "folds": int,
     "metrics": {"ndcg@10": {"mean": float, "ci95": [lo, hi], "per_fold": [float, ...]}, ...},
     "ablation": [{"name": str, "metrics": {...as above...},
                   "p_value_vs_zero_shot": float | None, "p_value_vs_bm25": float | None}],
     "segments": {"head": {"ndcg@10": float, ...}, "tail": {...}},
     "curves": {"run name": [{"step": int, "loss": float, "val_ndcg@10": float | None}]},
     "manifest": {...}}

Sections (``<section id=...>``): ``summary``, ``metrics``, ``per-fold``, ``ablation``,
``segments``, ``curves``, ``manifest``. Charts are ``<svg data-plot=...>`` elements, each with a
``<title>``: ``per-fold``, ``ablation``, ``segments``, ``training-loss`` and one
``validation-<metric>`` per ``val_<metric>`` key of the curves.

Example:
    >>> import tempfile, pathlib
    >>> report = {"dataset": "wands", "retriever": "bm25", "folds": 1,
    ...           "metrics": {"ndcg@10": {"mean": 0.4, "ci95": [None, None], "per_fold": [0.4]}}}
    >>> render_report(report, pathlib.Path(tempfile.mkdtemp())).name
    'report.html'
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shopaug.errors import DataError

logger = logging.getLogger(__name__)

NOT_MEASURED = "not measured in this run"
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
FOLD_COLOR = "#9DB9D3"
MEAN_COLOR = "#0B4F8A"

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d232a;
       margin: 0; background: #f6f7f9; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.2em; margin: 0 0 12px; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 16px 20px;
          margin: 16px 0; }
table { border-collapse: collapse; margin: 8px 0 12px; }
th, td { border-bottom: 1px solid #e5e8ec; padding: 4px 12px; text-align: right;
         white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f2f5; }
td.significant { font-weight: 600; }
.missing { color: #6b7480; font-style: italic; }
.note { color: #4a525c; font-size: 0.9em; }
svg { max-width: 100%; height: auto; display: block; margin: 8px 0; }
svg text { font: 11px system-ui, sans-serif; fill: #1d232a; }
pre { background: #f6f7f9; padding: 12px; overflow: auto; font-size: 0.85em; }
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _number(value: object) -> float | None:
    """A finite float, or None for None/NaN/inf."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: object) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:.4f}"


def _fmt_p(value: object) -> str:
    number = _number(value)
    if number is None:
        return "n/a"
    return f"{number:.1e}" if 0 < number < 1e-4 else f"{number:.4f}"


# --- validation ------------------------------------------------------------------------------


def _check_summary(field: str, summary: object) -> Mapping[str, Any]:
    if not isinstance(summary, Mapping) or "mean" not in summary:
        raise DataError(f"expected {{'mean', 'ci95', 'per_fold'}}, got {summary!r}", field=field)
    if summary["mean"] is not None and not isinstance(summary["mean"], int | float):
        raise DataError(f"mean must be a number, got {summary['mean']!r}", field=field)
    ci95 = summary.get("ci95")
    if ci95 is not None and (not isinstance(ci95, Sequence) or len(ci95) != 2):
        raise DataError(f"ci95 must be [low, high], got {ci95!r}", field=field)
    per_fold = summary.get("per_fold", [])
    if not isinstance(per_fold, Sequence) or isinstance(per_fold, str):
        raise DataError(f"per_fold must be a list of numbers, got {per_fold!r}", field=field)
    return summary


def _check_metrics(field: str, metrics: object) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(metrics, Mapping):
        raise DataError(f"expected an object of metric summaries, got {metrics!r}", field=field)
    return {name: _check_summary(f"{field}.{name}", value) for name, value in metrics.items()}


def _validate(report: Mapping[str, Any]) -> None:
    for key, kind in (("dataset", str), ("retriever", str), ("folds", int), ("metrics", dict)):
        if key not in report:
            raise DataError(f"the report needs a {key!r} entry", field=key)
        if not isinstance(report[key], kind) or isinstance(report[key], bool):
            raise DataError(
                f"expected {kind.__name__}, got {type(report[key]).__name__}", field=key
            )
    _check_metrics("metrics", report["metrics"])
    for index, row in enumerate(report.get("ablation") or []):
        if not isinstance(row, Mapping) or "name" not in row:
            raise DataError(
                f"expected an object with a 'name', got {row!r}", field=f"ablation[{index}]"
            )
        _check_metrics(f"ablation[{index}].metrics", row.get("metrics", {}))
    for key in ("segments", "curves", "manifest"):
        if report.get(key) is not None and not isinstance(report[key], Mapping):
            raise DataError(f"expected an object, got {type(report[key]).__name__}", field=key)


# --- SVG charts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bar:
    label: str
    value: float | None
    color: str
    low: float | None = None
    high: float | None = None


def _nice_step(span: float, count: int = 5) -> float:
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _axis_range(values: Sequence[float]) -> tuple[float, float, float]:
    """(low, high, step) of a y axis that holds ``values`` and 0, with round ticks."""
    low = min([0.0, *values])
    high = max([0.0, *values])
    if high == low:
        high = low + 1.0
    step = _nice_step(high - low)
    return math.floor(low / step) * step, math.ceil(high / step - 1e-9) * step, step


def _svg_open(plot: str, title: str, width: int, height: int) -> list[str]:
    return [
        f'<svg data-plot="{_esc(plot)}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{_esc(title)}</title>",
        f'<text x="{width / 2:.1f}" y="16" text-anchor="middle" font-weight="600">'
        f"{_esc(title)}</text>",
    ]


def _y_axis(
    parts: list[str], low: float, high: float, step: float, box: tuple[float, float, float, float]
) -> None:
    left, top, right, bottom = box
    tick = low
    while tick <= high + step / 2:
        y = bottom - (tick - low) / (high - low) * (bottom - top)
        parts.append(
            f'<line x1="{left:.1f}" x2="{right:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#e5e8ec"/><text x="{left - 6:.1f}" y="{y + 4:.1f}" '
            f'text-anchor="end">{tick:.4g}</text>'
        )
        tick += step
    parts.append(
        f'<line x1="{left:.1f}" x2="{left:.1f}" y1="{top:.1f}" y2="{bottom:.1f}" stroke="#555"/>'
    )


def _legend(parts: list[str], entries: Sequence[tuple[str, str]], x: float, y: float) -> None:
    for index, (label, color) in enumerate(entries):
        offset = x + index * 150
        parts.append(
            f'<rect x="{offset:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{color}"/>'
            f'<text x="{offset + 14:.1f}" y="{y:.1f}">{_esc(label)}</text>'
        )


def _bar_chart(
    plot: str,
    title: str,
    groups: Sequence[tuple[str, Sequence[_Bar]]],
    legend: Sequence[tuple[str, str]] = (),
) -> str:
    """Vertical grouped bars with optional error bars (``low``..``high``) and a legend."""
    bar_width, gap = 22, 26
    n_bars = sum(len(bars) for _, bars in groups)
    width = max(480, 70 + n_bars * bar_width + len(groups) * gap)
    height = 300
    box = (56.0, 32.0, width - 16.0, height - 64.0)
    values = [
        v for _, bars in groups for b in bars for v in (b.value, b.low, b.high) if v is not None
    ]
    low, high, step = _axis_range(values)
    scale = (box[3] - box[1]) / (high - low)

    def y_of(value: float) -> float:
        return box[3] - (value - low) * scale

    parts = _svg_open(plot, title, width, height)
    _y_axis(parts, low, high, step, box)
    x = box[0] + gap / 2
    for group_label, bars in groups:
        start = x
        for bar in bars:
            tip = f"{group_label} {bar.label}: {_fmt(bar.value)}"
            if bar.low is not None and bar.high is not None:
                tip += f" (95% CI {_fmt(bar.low)} to {_fmt(bar.high)})"
            if bar.value is not None:
                top, base = sorted((y_of(bar.value), y_of(0.0)))
                parts.append(
                    f'<rect x="{x:.1f}" y="{top:.1f}" width="{bar_width - 4}" '
                    f'height="{max(base - top, 0.5):.1f}" fill="{bar.color}">'
                    f"<title>{_esc(tip)}</title></rect>"
                )
            if bar.low is not None and bar.high is not None:
                mid = x + (bar_width - 4) / 2
                y_low, y_high = y_of(bar.low), y_of(bar.high)
                parts.append(
                    f'<path class="error-bar" d="M{mid - 4:.1f},{y_low:.1f}H{mid + 4:.1f}'
                    f"M{mid:.1f},{y_low:.1f}V{y_high:.1f}M{mid - 4:.1f},{y_high:.1f}"
                    f'H{mid + 4:.1f}" stroke="#222" stroke-width="1.5" fill="none"/>'
                )
            x += bar_width
        parts.append(
            f'<text x="{(start + x) / 2:.1f}" y="{box[3] + 16:.1f}" text-anchor="middle">'
            f"{_esc(group_label)}</text>"
        )
        x += gap
    _legend(parts, legend, box[0], height - 14)
    parts.append("</svg>")
    return "\n".join(parts)


def _horizontal_bar_chart(plot: str, title: str, bars: Sequence[_Bar]) -> str:
    """One horizontal bar per row (long labels fit), with error bars."""
    label_width, row = 220, 26
    width, height = 720, 60 + row * len(bars)
    left, right, top = float(label_width), width - 30.0, 32.0
    values = [v for b in bars for v in (b.value, b.low, b.high) if v is not None]
    low, high, step = _axis_range(values)
    scale = (right - left) / (high - low)

    def x_of(value: float) -> float:
        return left + (value - low) * scale

    parts = _svg_open(plot, title, width, height)
    bottom = top + row * len(bars)
    tick = low
    while tick <= high + step / 2:
        x = x_of(tick)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{bottom:.1f}" stroke="#e5e8ec"/>'
            f'<text x="{x:.1f}" y="{bottom + 14:.1f}" text-anchor="middle">{tick:.4g}</text>'
        )
        tick += step
    for index, bar in enumerate(bars):
        y = top + index * row
        label = bar.label if len(bar.label) <= 34 else bar.label[:33] + "…"
        parts.append(
            f'<text x="{left - 8:.1f}" y="{y + row / 2 + 4:.1f}" text-anchor="end">'
            f"{_esc(label)}</text>"
        )
        if bar.value is not None:
            start, end = sorted((x_of(0.0), x_of(bar.value)))
            tip = f"{bar.label}: {_fmt(bar.value)}"
            parts.append(
                f'<rect x="{start:.1f}" y="{y + 4:.1f}" width="{max(end - start, 0.5):.1f}" '
                f'height="{row - 8}" fill="{bar.color}"><title>{_esc(tip)}</title></rect>'
            )
        if bar.low is not None and bar.high is not None:
            mid = y + row / 2
            parts.append(
                f'<path class="error-bar" d="M{x_of(bar.low):.1f},{mid - 4:.1f}V{mid + 4:.1f}'
                f"M{x_of(bar.low):.1f},{mid:.1f}H{x_of(bar.high):.1f}"
                f'M{x_of(bar.high):.1f},{mid - 4:.1f}V{mid + 4:.1f}" stroke="#222" '
                f'stroke-width="1.5" fill="none"/>'
            )
    parts.append("</svg>")
    return "\n".join(parts)


def _line_chart(
    plot: str, title: str, series: Mapping[str, Sequence[tuple[float, float]]], y_label: str
) -> str:
    """One polyline with point markers per series; x is the training step."""
    width, height = 720, 320
    box = (56.0, 32.0, width - 16.0, height - 70.0)
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points]
    x_low, x_high = min(xs), max(xs)
    if x_high == x_low:
        x_high = x_low + 1
    y_low, y_high = min(ys), max(ys)
    pad = (y_high - y_low) * 0.05 or 0.5
    y_low, y_high = y_low - pad, y_high + pad
    y_step = _nice_step(y_high - y_low)
    y_low, y_high = math.floor(y_low / y_step) * y_step, math.ceil(y_high / y_step) * y_step

    def point(x: float, y: float) -> tuple[float, float]:
        return (
            box[0] + (x - x_low) / (x_high - x_low) * (box[2] - box[0]),
            box[3] - (y - y_low) / (y_high - y_low) * (box[3] - box[1]),
        )

    parts = _svg_open(plot, title, width, height)
    _y_axis(parts, y_low, y_high, y_step, box)
    x_step = _nice_step(x_high - x_low)
    tick = math.ceil(x_low / x_step) * x_step
    while tick <= x_high + x_step / 1e6:
        px, _ = point(tick, y_low)
        parts.append(
            f'<text x="{px:.1f}" y="{box[3] + 16:.1f}" text-anchor="middle">{tick:g}</text>'
        )
        tick += x_step
    parts.append(
        f'<text x="{(box[0] + box[2]) / 2:.1f}" y="{box[3] + 32:.1f}" text-anchor="middle">'
        f'step</text><text x="14" y="{(box[1] + box[3]) / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(box[1] + box[3]) / 2:.1f})">{_esc(y_label)}</text>'
    )
    legend = []
    for index, (name, points) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        legend.append((name, color))
        coordinates = [point(x, y) for x, y in points]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in coordinates)
        parts.append(
            f'<polyline data-series="{_esc(name)}" points="{path}" fill="none" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        for (x, y), (px, py) in zip(points, coordinates, strict=True):
            parts.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{color}">'
                f"<title>{_esc(f'{name}, step {x:g}: {y:.4g}')}</title></circle>"
            )
    _legend(parts, legend, box[0], height - 10)
    parts.append("</svg>")
    return "\n".join(parts)


# --- sections --------------------------------------------------------------------------------


def _section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{section_id}">\n<h2>{_esc(title)}</h2>\n{body}\n</section>'


def _missing() -> str:
    return f'<p class="missing">{NOT_MEASURED}</p>'


def _ci_text(summary: Mapping[str, Any]) -> str:
    ci95 = summary.get("ci95") or [None, None]
    if _number(ci95[0]) is None or _number(ci95[1]) is None:
        return "n/a"
    return f"[{_fmt(ci95[0])}, {_fmt(ci95[1])}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_esc(cell)}</th>" for cell in header)
    body = "\n".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _td(text: str, css_class: str = "") -> str:
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<td{attribute}>{_esc(text)}</td>"


def _metrics_section(metrics: Mapping[str, Mapping[str, Any]], folds: int) -> str:
    if not metrics:
        return _section("metrics", "Metrics", _missing())
    width = max([folds, *(len(s.get("per_fold") or []) for s in metrics.values())])
    header = ["metric", "mean", "95% CI", *(f"fold {i + 1}" for i in range(width))]
    rows = []
    for name, summary in metrics.items():
        per_fold = list(summary.get("per_fold") or [])
        cells = [_td(name), _td(_fmt(summary["mean"])), _td(_ci_text(summary))]
        cells += [_td(_fmt(value)) for value in per_fold]
        cells += [_td("")] * (width - len(per_fold))
        rows.append(cells)
    note = (
        f'<p class="note">Mean over {folds} query-level fold(s); the 95% interval is Student t '
        "over the fold means (n/a with one fold).</p>"
    )
    return _section("metrics", "Metrics", _table(header, rows) + note)


def _per_fold_section(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    if not metrics:
        return _section("per-fold", "Per-fold results", _missing())
    groups = []
    n_folds = 0
    for name, summary in metrics.items():
        per_fold = list(summary.get("per_fold") or [])
        n_folds = max(n_folds, len(per_fold))
        bars = [
            _Bar(f"fold {i + 1}", _number(value), FOLD_COLOR) for i, value in enumerate(per_fold)
        ]
        ci95 = summary.get("ci95") or [None, None]
        bars.append(
            _Bar("mean", _number(summary["mean"]), MEAN_COLOR, _number(ci95[0]), _number(ci95[1]))
        )
        groups.append((name, bars))
    legend = [("each fold", FOLD_COLOR), ("mean, 95% CI", MEAN_COLOR)]
    chart = _bar_chart("per-fold", "Metric per fold, and mean with 95% CI", groups, legend)
    return _section("per-fold", "Per-fold results", chart)


def _ablation_section(rows: Sequence[Mapping[str, Any]], primary: str | None) -> str:
    if not rows:
        return _section("ablation", "Ablation", _missing())
    names: list[str] = []
    for row in rows:
        names += [name for name in (row.get("metrics") or {}) if name not in names]
    header = ["variant", *names, "p vs zero-shot", "p vs BM25"]
    table_rows = []
    for row in rows:
        metrics = row.get("metrics") or {}
        cells = [_td(str(row["name"]))]
        for name in names:
            summary = metrics.get(name)
            cells.append(
                _td("n/a" if summary is None else f"{_fmt(summary['mean'])} {_ci_text(summary)}")
            )
        for key in ("p_value_vs_zero_shot", "p_value_vs_bm25"):
            p_value = _number(row.get(key))
            significant = p_value is not None and p_value < 0.05
            cells.append(_td(_fmt_p(p_value), "significant" if significant else ""))
        table_rows.append(cells)
    metric = primary if primary in names else (names[0] if names else None)
    note = (
        '<p class="note">Cells: mean [95% CI] over folds. p-values come from paired tests over '
        "queries; bold when below 0.05 (not corrected for multiple comparisons).</p>"
    )
    chart = ""
    if metric is not None:
        bars = []
        for index, row in enumerate(rows):
            summary = (row.get("metrics") or {}).get(metric) or {}
            ci95 = summary.get("ci95") or [None, None]
            bars.append(
                _Bar(
                    str(row["name"]),
                    _number(summary.get("mean")),
                    PALETTE[index % len(PALETTE)],
                    _number(ci95[0]),
                    _number(ci95[1]),
                )
            )
        chart = _horizontal_bar_chart("ablation", f"Ablation: {metric}, mean with 95% CI", bars)
    return _section("ablation", "Ablation", _table(header, table_rows) + note + chart)


def _is_metric(name: str) -> bool:
    """Metric columns are named ``...@k``; others (e.g. ``queries``) are counts."""
    return "@" in name


def _segments_section(segments: Mapping[str, Mapping[str, Any]] | None) -> str:
    if not segments:
        return _section("segments", "Head vs tail", _missing())
    names: list[str] = []
    for values in segments.values():
        names += [name for name in values if name not in names]

    def cell(name: str, value: object) -> str:
        number = _number(value)
        if _is_metric(name) or number is None:
            return _td(_fmt(value))
        return _td(f"{number:g}")

    rows = [
        [_td(segment), *(cell(name, values.get(name)) for name in names)]
        for segment, values in segments.items()
    ]
    # Only metrics share the chart's 0-1 scale; counts stay in the table.
    charted = [name for name in names if _is_metric(name)] or names
    colors = {segment: PALETTE[i % len(PALETTE)] for i, segment in enumerate(segments)}
    groups = [
        (name, [_Bar(s, _number(v.get(name)), colors[s]) for s, v in segments.items()])
        for name in charted
    ]
    legend = list(colors.items())
    chart = _bar_chart("segments", "Metrics by product popularity segment", groups, legend)
    return _section("segments", "Head vs tail", _table(["segment", *names], rows) + chart)


def _curves_section(curves: Mapping[str, Sequence[Mapping[str, Any]]] | None) -> str:
    if not curves:
        return _section("curves", "Training curves", _missing())
    keys = ["loss"]
    for points in curves.values():
        for point in points:
            keys += [key for key in point if key.startswith("val_") and key not in keys]
    charts = []
    for key in keys:
        series = {
            name: [
                (float(p["step"]), float(p[key]))
                for p in points
                if _number(p.get("step")) is not None and _number(p.get(key)) is not None
            ]
            for name, points in curves.items()
        }
        series = {name: points for name, points in series.items() if points}
        if not series:
            continue
        if key == "loss":
            charts.append(_line_chart("training-loss", "Training loss", series, "loss"))
        else:
            metric = key.removeprefix("val_")
            charts.append(
                _line_chart(f"validation-{metric}", f"Validation {metric}", series, metric)
            )
    return _section("curves", "Training curves", "\n".join(charts) or _missing())


def _manifest_section(manifest: Mapping[str, Any] | None) -> str:
    if not manifest:
        return _section("manifest", "Manifest", _missing())
    text = json.dumps(manifest, indent=2, sort_keys=True, default=str)
    return _section("manifest", "Manifest", f"<pre>{_esc(text)}</pre>")


def report_html(report: Mapping[str, Any]) -> str:
    """The report page as a string (see the module docstring for the input schema).

    Raises:
        DataError: A required entry is missing or has the wrong type; names the field.
    """
    _validate(report)
    metrics = _check_metrics("metrics", report["metrics"])
    primary = next(iter(metrics), None)
    title = f"shopaug report: {report['retriever']} on {report['dataset']}"
    summary = _table(
        ["dataset", "retriever", "folds"],
        [[_td(report["dataset"]), _td(report["retriever"]), _td(str(report["folds"]))]],
    )
    sections = [
        _section("summary", "Run", summary),
        _metrics_section(metrics, report["folds"]),
        _per_fold_section(metrics),
        _ablation_section(report.get("ablation") or [], primary),
        _segments_section(report.get("segments")),
        _curves_section(report.get("curves")),
        _manifest_section(report.get("manifest")),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{_esc(title)}</h1>\n" + "\n".join(sections) + "\n</main>\n</body>\n</html>\n"
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
        DataError: A required entry is missing or has the wrong type; names the field.
    """
    target = Path(path)
    if target.is_dir():
        target = target / "report.html"
    page = report_html(report)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    logger.info("wrote %s (%d bytes)", target, len(page))
    return target
