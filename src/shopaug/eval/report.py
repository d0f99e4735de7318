"""One self-contained ``report.html`` from a run's metrics.json: a Jinja2 page with the charts
of :mod:`shopaug.eval.charts`.

The page loads nothing: CSS is inline, charts are inline SVG, there is no script, and a
Content-Security-Policy forbids every network fetch, so the file opens the same offline, in a CI
artifact or attached to an e-mail. The template (``eval/templates/report.html.j2``) autoescapes
everything; row and dataset names come from user configs. Tables sit in a box that scrolls
sideways inside its card when they are wider than it, and long row names wrap.

Input (the metrics.json payload of ``shopaug run``). Only ``dataset`` is required; every other
entry is optional, its section then says "not measured in this run", and keys not listed here
are ignored::

    {"dataset": str, "retriever": str, "folds": int, "trained_folds": int,
     "tower": "query" | "full", "train": {setting: value},
     "queries": {"validation": int, "test": int},
     "selected": {"system": str, "by": "validation ndcg@10", "validation": {metric: float}},
     "metrics": {metric: {"mean": float, "ci95": [lo, hi], "per_fold": [float, ...]}},
     "served": {"system": str, "row": str, "model_dir": str, "epochs": int, "queries": int,
                "fusion": {"method": str, "weight": float}, "reranker": str, "note": str},
     "ablation": [{"name": str, "kind": "baseline" | "fine-tune" | "augmented" | "fusion"
                   | "reranker", "of": str, "metrics": {...as above...},
                   "ndcg@10_exact": {...one summary as above...},
                   "bootstrap_ci95": {metric: [lo, hi]}, "validation": {metric: float},
                   "p_value_vs_plain_fine_tune": float | None,
                   "p_value_vs_zero_shot_hybrid": ..., "p_value_vs_bm25": ...,
                   "p_value_vs_zero_shot": ..., "vs_plain_fine_tune": {"queries": int,
                   "mean_difference": float, "ci95": [lo, hi], "p_value_bootstrap": float,
                   "p_value": float}, "vs_zero_shot_hybrid": {...}, "epochs": float,
                   "steps": float, "train_seconds_per_fold": float, "examples": float,
                   "groups": float, "weight": [float, ...]}],
     "segments": {"head": {"bm25 ndcg@10": float, "queries": float, ...}, "tail": {...}},
     "curves": {row: [{"step": int, "epoch": int, "loss": float, "val_ndcg@10": float | None}]},
     "audit": [{"method": str, "negatives": int, "fn_rate_exact": float,
                "fn_rate_exact_or_partial": float, "tail_share": float}],
     "reranker": {"first_stage": str, "served": bool, "validation_first_stage": float,
                  "validation_reranked": float},
     "manifest": {...}}

The ablation table lists each row followed by the fusion rows built on it (``of``).
Sections (``<section id=...>``): ``summary``, ``metrics``, ``served``, ``ablation``,
``segments``, ``curves``, ``audit``, ``reranker``, ``manifest``. Charts: see
:mod:`shopaug.eval.charts`.

Example:
    >>> import tempfile, pathlib
    >>> report = {"dataset": "wands", "retriever": "bm25", "folds": 1,
    ...           "metrics": {"ndcg@10": {"mean": 0.4, "ci95": [None, None], "per_fold": [0.4]}}}
    >>> render_report(report, pathlib.Path(tempfile.mkdtemp())).name
    'report.html'

Why one module of this length: the payload checks and the tables of one template; the charts
are in :mod:`shopaug.eval.charts`.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from shopaug.errors import DataError
from shopaug.eval import charts
from shopaug.eval.charts import finite_number as _number
from shopaug.eval.charts import interval as _interval
from shopaug.eval.charts import ordered_keys as _union

logger = logging.getLogger(__name__)

NOT_MEASURED = "not measured in this run"
SELECTION_NOTE = "chosen on validation queries; test score reported once"
PRIMARY_METRIC = "ndcg@10"
EXACT_METRIC = "ndcg@10_exact"
REFERENCES = {  # the paired comparisons: p-value key suffix -> column label
    "plain_fine_tune": "plain fine-tune",
    "zero_shot_hybrid": "zero-shot hybrid",
    "bm25": "BM25",
    "zero_shot": "zero-shot",
}
DIFFERENCES = ("plain_fine_tune", "zero_shot_hybrid")  # also shown as Δ [95% CI]
TRAINING_FIELDS = {  # one "training" cell: the first line, then the rest as small lines
    "steps": "{:,.0f} steps",
    "epochs": "{:.3g} epochs",
    "train_seconds_per_fold": "{:.1f} s / fold",
    "examples": "{:,.0f} examples",
    "groups": "{:,.0f} groups",
}
TOWERS = {
    "query": "query (query encoder fine-tuned; catalog vectors frozen)",
    "full": "full (query and catalog encoders both fine-tuned)",
}


# --- values ----------------------------------------------------------------------------------


SCORE, COUNT, RATE = "{:.4f}", "{:g}", "{:.1%}"


def _fmt(value: object, form: str = SCORE) -> str:
    number = _number(value)
    return "n/a" if number is None else form.format(number)


def _fmt_p(value: object) -> str:
    number = _number(value)
    if number is None:
        return "n/a"
    return f"{number:.1e}" if 0 < number < 1e-4 else f"{number:.4f}"


def _fmt_interval(pair: object, digits: int = 4) -> str:
    found = _interval(pair)
    return "n/a" if found is None else f"[{found[0]:.{digits}f}, {found[1]:.{digits}f}]"


def _is_metric(name: str) -> bool:
    """Metric keys are named ``...@k``; others (e.g. ``queries``) are counts."""
    return "@" in name


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


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


def _check_entry(where: str, row: Mapping[str, Any]) -> None:
    """One ablation entry (its ``name`` is already checked)."""
    _check_objects(where, row, ("validation", "bootstrap_ci95"))
    _check_objects(where, row, [f"vs_{key}" for key in REFERENCES])
    _check_metrics(f"{where}metrics", row.get("metrics") or {})
    if row.get(EXACT_METRIC) is not None:
        _check_summary(f"{where}{EXACT_METRIC}", row[EXACT_METRIC])
    weight = row.get("weight")
    if weight is not None and (
        not isinstance(weight, list) or any(_number(w) is None for w in weight)
    ):
        raise DataError(f"expected a list of numbers, got {weight!r}", field=f"{where}weight")


def _validate(report: Mapping[str, Any]) -> None:
    if not isinstance(report.get("dataset"), str):
        raise DataError("the report needs a 'dataset' name (a string)", field="dataset")
    for key, kind in (("retriever", str), ("folds", int), ("trained_folds", int), ("tower", str)):
        value = report.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise DataError(f"expected {kind.__name__}, got {type(value).__name__}", field=key)
    _check_objects("", report, ("metrics", "selected", "segments", "curves", "reranker"))
    _check_objects("", report, ("manifest", "served", "queries", "train"))
    _check_objects("served.", report.get("served") or {}, ("fusion",))
    _check_metrics("metrics", report.get("metrics") or {})
    if report.get("ablation") is not None:
        _check_rows("ablation", report["ablation"], "name")
        for index, row in enumerate(report["ablation"]):
            _check_entry(f"ablation[{index}].", row)
    if report.get("audit") is not None:
        _check_rows("audit", report["audit"], "method")
    _check_objects("segments.", report.get("segments") or {}, list(report.get("segments") or {}))
    for name, points in (report.get("curves") or {}).items():
        _check_rows(f"curves.{name}", points)
    if report.get("selected"):
        if not isinstance(report["selected"].get("system"), str):
            raise DataError("expected the selected system's name", field="selected.system")
        _check_objects("selected.", report["selected"], ("validation",))


# --- tables ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, small lines under it (intervals) and a CSS class."""

    text: str
    notes: tuple[str, ...] = ()
    css: str = "num"


@dataclass
class Table:
    """A table for the template; ``row_css`` holds each row's space-separated CSS classes."""

    caption: str
    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    row_css: list[str] = field(default_factory=list)


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


def _grouped(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Each row followed by the fusion rows built on it (``of``); other rows keep their order."""
    names = {row["name"] for row in rows}
    fusions: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("kind") == "fusion" and row.get("of") in names and row.get("of") != row["name"]:
            fusions.setdefault(row["of"], []).append(row)
    children = {id(row) for group in fusions.values() for row in group}
    ordered: list[Mapping[str, Any]] = []
    for row in rows:
        if id(row) not in children:
            ordered += [row, *fusions.get(row["name"], [])]
    return ordered


def _summary_cell(summary: Mapping[str, Any], bootstrap: object = None) -> Cell:
    notes = [_fmt_interval(summary.get("ci95"), 3)] if _interval(summary.get("ci95")) else []
    if _interval(bootstrap):
        notes.append("boot " + _fmt_interval(bootstrap, 3))
    return Cell(_fmt(summary.get("mean")), tuple(notes))


def _versus_cell(row: Mapping[str, Any], key: str) -> Cell:
    """The p-value against a reference, bold below 0.05, with the mean difference under it."""
    versus = row.get(f"vs_{key}") or {}
    p_value = _number(row.get(f"p_value_vs_{key}"))
    p_value = _number(versus.get("p_value")) if p_value is None else p_value
    notes: tuple[str, ...] = ()
    if key in DIFFERENCES and _number(versus.get("mean_difference")) is not None:
        notes = (f"Δ {versus['mean_difference']:+.4f}",)
        if _interval(versus.get("ci95")):
            notes += (_fmt_interval(versus["ci95"], 3),)
    css = "num significant" if p_value is not None and p_value < 0.05 else "num"
    return Cell(_fmt_p(p_value), notes, css)


def _name_cell(row: Mapping[str, Any]) -> Cell:
    notes = []
    of = row.get("of")
    if isinstance(of, str) and of not in str(row["name"]):
        notes.append(f"on {of}")
    if row.get("weight"):
        notes.append("dense weight per fold: " + ", ".join(_fmt(w, "{:g}") for w in row["weight"]))
    return Cell(str(row["name"]), tuple(notes), css="name")


def _ablation_table(rows: Sequence[Mapping[str, Any]], selected: str | None) -> Table:
    metrics = _union([row.get("metrics") or {} for row in rows])
    validation = _union([row.get("validation") or {} for row in rows])
    present = {key for row in rows for key, value in row.items() if value is not None}
    kinds = any(row.get("kind") for row in rows)
    exact = EXACT_METRIC in present
    versus = [k for k in REFERENCES if {f"p_value_vs_{k}", f"vs_{k}"} & present]
    trained = any(_number(row.get(key)) is not None for row in rows for key in TRAINING_FIELDS)
    differences = any(f"vs_{key}" in present for key in DIFFERENCES)
    table = Table(
        "Test cells: mean over folds, then the 95% interval over folds (Student t) and, "
        "marked boot, over queries (bootstrap). p-values come from paired tests over queries; "
        "bold below 0.05 (not corrected for multiple comparisons)."
        + (
            " Δ: the mean per-query difference in ndcg@10 from the reference over the test "
            "queries both share, with its bootstrap 95% interval."
            if differences
            else ""
        )
        + (
            " ndcg@10 (Exact only): gain 1 for Exact products, 0 for the rest, over the test "
            "queries that have an Exact product."
            if exact
            else ""
        )
        + " Fusion rows follow the row they fuse with BM25; a convex fusion's weight on the "
        "dense side is picked per fold on validation queries.",
        ["system", *(["kind"] if kinds else []), *(f"validation {m}" for m in validation)]
        + metrics
        + (["ndcg@10 (Exact only)"] if exact else [])
        + [
            f"p vs {REFERENCES[key]}"
            + (" (Δ, 95% CI)" if key in DIFFERENCES and f"vs_{key}" in present else "")
            for key in versus
        ]
        + (["training"] if trained else []),
    )
    grouped = _grouped(rows)
    parents = {row["of"] for row in grouped if row.get("kind") == "fusion" and row.get("of")}
    for row in grouped:
        bootstrap = row.get("bootstrap_ci95") or {}
        cells = [_name_cell(row)]
        cells += [Cell(str(row.get("kind") or ""), css="text")] if kinds else []
        cells += [Cell(_fmt((row.get("validation") or {}).get(m))) for m in validation]
        cells += [
            _summary_cell((row.get("metrics") or {}).get(m) or {}, bootstrap.get(m))
            for m in metrics
        ]
        cells += [_summary_cell(row.get(EXACT_METRIC) or {})] if exact else []
        cells += [_versus_cell(row, key) for key in versus]
        if trained:
            lines = [
                form.format(row[key])
                for key, form in TRAINING_FIELDS.items()
                if _number(row.get(key)) is not None
            ]
            cells.append(Cell(lines[0], tuple(lines[1:])) if lines else Cell("n/a"))
        table.rows.append(cells)
        css = ["selected"] if row["name"] == selected else []
        css += ["group"] if row["name"] in parents else []
        css += ["fused"] if row.get("kind") == "fusion" and row.get("of") in parents else []
        table.row_css.append(" ".join(css))
    return table


def _segments_table(segments: Mapping[str, Mapping[str, Any]]) -> Table:
    names = _union(list(segments.values()))
    table = Table(
        "Queries split by the popularity of their relevant products.", ["segment", *names]
    )
    for segment, values in segments.items():
        table.rows.append(
            [Cell(str(segment), css="name")]
            + [Cell(_fmt(values.get(n), SCORE if _is_metric(n) else COUNT)) for n in names]
        )
    return table


def _audit_table(audit: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(
        "Among mined negatives whose pair humans judged, the share judged relevant (false "
        "negatives): Exact only, or Exact or Partial. Tail share: negatives from the catalog's "
        "tail (outside the most popular 20 %).",
        ["method", "negatives", "FN rate (exact)", "FN rate (exact or partial)", "tail share"],
    )
    for row in audit:
        table.rows.append(
            [Cell(str(row["method"]), css="name"), Cell(_fmt(row.get("negatives"), COUNT))]
            + [
                Cell(_fmt(row.get(key), RATE))
                for key in ("fn_rate_exact", "fn_rate_exact_or_partial", "tail_share")
            ]
        )
    return table


# --- cards -----------------------------------------------------------------------------------


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


def _run_pairs(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    queries = report.get("queries") or {}
    pairs = [
        ("dataset", report["dataset"]),
        ("folds", _fmt(report.get("folds"), COUNT)),
        ("trained folds", _fmt(report.get("trained_folds"), COUNT)),
    ]
    pairs += [
        (f"{split} queries (all folds)", _fmt(queries[split], "{:,.0f}"))
        for split in ("validation", "test")
        if split in queries
    ]
    if report.get("tower"):
        pairs.append(("trained tower", TOWERS.get(report["tower"], report["tower"])))
    if report.get("train") is not None:
        settings = [f"{key} = {_text(value)}" for key, value in report["train"].items()]
        pairs.append(("training settings", ", ".join(settings) or "TrainConfig defaults"))
    return pairs


def _served(served: Mapping[str, Any]) -> dict[str, Any]:
    fusion = served.get("fusion") or {}
    fused = [_text(fusion.get("method", "fusion"))]
    fused += [f"{key} {_text(value)}" for key, value in fusion.items() if key != "method"]
    pairs = [
        ("served system", served.get("system")),
        ("trained row", served.get("row")),
        ("model folder", served.get("model_dir")),
        ("epochs", _fmt(served["epochs"], COUNT) if "epochs" in served else None),
        ("judged queries", _fmt(served["queries"], "{:,.0f}") if "queries" in served else None),
        ("fused with BM25", ", ".join(fused) if fusion else None),
        ("reranker", served.get("reranker")),
        ("note", served.get("note")),
    ]
    return {
        "retrained": bool(served.get("model_dir")),
        "pairs": [(name, _text(value)) for name, value in pairs if value is not None],
    }


def _reranker(reranker: Mapping[str, Any]) -> dict[str, Any]:
    """The gate's decision; the template words it."""
    served = reranker.get("served")
    return {
        "served": None if served is None else bool(served),
        "first_stage": _text(reranker.get("first_stage") or ""),
        "first": _fmt(reranker.get("validation_first_stage")),
        "reranked": _fmt(reranker.get("validation_reranked")),
    }


# --- page ------------------------------------------------------------------------------------


@functools.cache
def report_template(name: str) -> jinja2.Template:
    """A page template of ``shopaug/eval/templates`` (autoescaped; an undefined name is an
    error), shared by the search, recommendation and CTR reports."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("shopaug.eval", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template(name)


def _template() -> jinja2.Template:
    return report_template("report.html.j2")


def report_html(report: Mapping[str, Any]) -> str:
    """The report page as a string (see the module docstring for the input schema).

    Raises:
        DataError: An entry has the wrong shape; names the field.
    """
    _validate(report)
    selection = _selection(report)
    metrics = report.get("metrics") or {}
    ablation = _grouped(report.get("ablation") or [])
    chosen = selection["system"] if selection["from_validation"] else None
    segments = report.get("segments") or {}
    charted = [name for name in _union(list(segments.values())) if _is_metric(name)]
    audit = report.get("audit") or []
    manifest = report.get("manifest")
    return _template().render(
        title=f"shopaug report: {selection['system'] or 'run'} on {report['dataset']}",
        not_measured=NOT_MEASURED,
        selection_note=SELECTION_NOTE,
        run=_run_pairs(report),
        selection=selection,
        metrics=_metrics_table(metrics, report.get("folds")) if metrics else None,
        served=_served(report["served"]) if report.get("served") else None,
        ablation=_ablation_table(ablation, chosen) if ablation else None,
        ablation_chart=charts.ablation_chart(ablation, chosen, metric=PRIMARY_METRIC)
        if ablation
        else None,
        segments=_segments_table(segments) if segments else None,
        segments_chart=charts.segments_chart(segments, charted) if charted else None,
        curves=charts.curve_charts(report.get("curves") or {}),
        audit=_audit_table(audit) if audit else None,
        audit_chart=charts.audit_chart(audit) if audit else None,
        reranker=_reranker(report["reranker"]) if report.get("reranker") else None,
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
