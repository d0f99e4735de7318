"""The ``report.html`` of a CTR run: variants with intervals, the reliability diagram and the
off-policy estimates, in one self-contained page (inline CSS and SVG, no script, no fetch).

The charts come from :mod:`shopaug.eval.charts` (bars with intervals) and
:func:`shopaug.eval.calibration.reliability_chart`; the input is the metrics.json payload of
``shopaug run`` with ``task: ctr`` (see :mod:`shopaug.experiment.ctr`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from shopaug.eval import charts
from shopaug.eval.calibration import ReliabilityBins, reliability_chart
from shopaug.eval.report import report_template

logger = logging.getLogger(__name__)


def _template() -> jinja2.Template:
    return report_template("ctr_report.html.j2")


def _cell(summary: Mapping[str, Any] | None, digits: int = 4) -> dict[str, str]:
    if not summary:
        return {"text": "-", "note": ""}
    value = summary.get("mean", summary.get("value"))
    interval = charts.interval(summary.get("ci95"))
    note = "" if interval is None else f"[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    return {"text": f"{value:.{digits}f}", "note": note}


def _text(value: object) -> dict[str, str]:
    return {"text": str(value), "note": ""}


def _bars(plot: str, title: str, rows: Sequence[Mapping[str, Any]], key: str, axis: str) -> Any:
    entries = [(row["name"], row.get(key) or {}) for row in rows]
    entries = [
        (name, s)
        for name, s in entries
        if charts.finite_number(s.get("mean", s.get("value"))) is not None
    ]
    if not entries:
        return ""
    series = charts.Series(
        axis,
        [charts.finite_number(s.get("mean", s.get("value"))) for _, s in entries],
        [charts.SERIES_COLORS[0]],
        [charts.interval(s.get("ci95")) for _, s in entries],
    )
    return charts.hbar_chart(plot, title, [name for name, _ in entries], [series], axis_label=axis)


def ctr_report_html(
    report: Mapping[str, Any], curves: Mapping[str, ReliabilityBins], manifest: object = None
) -> str:
    """The report page as a string."""
    variants = report["variants"]
    selected = report["selected"]["system"]
    variant_rows = [
        {
            "selected": row["name"] == selected,
            "cells": [
                _text(row["name"]),
                _cell(row["auc"]),
                _cell(row["log_loss"], 5),
                _cell(row["ece"], 5),
                _text(f"{row['mean_predicted']:.5f}"),
                _text(
                    "-"
                    if row.get("validation_log_loss") is None
                    else f"{row['validation_log_loss']:.5f}"
                ),
            ],
        }
        for row in variants
    ]
    models = [row for row in variants if "ope" in row]
    ope = report["ope"]
    ope_rows = [
        {
            "selected": False,
            "cells": [
                _text("logged uniform policy (on-policy)"),
                _cell(ope["logged_policy"], 5),
                _text("-"),
                _text("-"),
                _text("1.00"),
            ],
        }
    ] + [
        {
            "selected": row["name"] == selected,
            "cells": [
                _text(f"softmax by CTR: {row['name']}"),
                _cell(row["ope"]["ips"], 5),
                _cell(row["ope"]["snips"], 5),
                _cell(row["ope"].get("dr"), 5),
                _text(f"{row['ope']['mean_weight']:.2f}"),
            ],
        }
        for row in models
    ]
    greedy = ope["greedy_chosen"]
    ope_rows.append(
        {
            "selected": False,
            "cells": [
                _text(f"greedy ranking by CTR: {selected}"),
                _cell(greedy["ips"], 5),
                _cell(greedy["snips"], 5),
                _cell(greedy.get("dr"), 5),
                _text(f"{greedy['mean_weight']:.2f} ({greedy['rounds_with_weight']} rounds)"),
            ],
        }
    )
    check = ope["validation"]
    validation_rows = [
        {
            "selected": False,
            "cells": [
                _text(name.upper()),
                _cell(check["estimates"][name], 5),
                _cell(check["truth"], 5),
                _text(f"{check['estimates'][name]['relative_error']:+.1%}"),
                _text("yes" if check["estimates"][name]["covers_truth"] else "no"),
            ],
        }
        for name in ("ips", "snips", "dr")
    ]
    dr_rows = [{"name": r["name"], "dr": r["ope"].get("dr")} for r in models]
    page = _template().render(
        title=f"shopaug CTR report: {selected} on {report['dataset']}",
        summary=(
            f"{report['impressions']['train']} training, {report['impressions']['validation']} "
            f"validation and {report['impressions']['test']} test impressions "
            f"({report['clicks']['train']}, {report['clicks']['validation']} and "
            f"{report['clicks']['test']} clicks); campaigns {', '.join(report['campaigns'])}."
        ),
        selected=selected,
        served=f"Served model: {report.get('served', {}).get('model_dir', 'none')}.",
        variant_header=["variant", "AUC", "log loss", "ECE", "mean predicted", "valid log loss"],
        variant_rows=variant_rows,
        auc_chart=_bars("auc", "Test AUC (95% CI)", variants, "auc", "AUC"),
        reliability_chart=reliability_chart(curves, title="Reliability on test impressions"),
        ope_header=["policy", "IPS", "SNIPS", "DR", "mean weight"],
        ope_rows=ope_rows,
        ope_note=(
            "Clicks per impression. Softmax policy: each item with probability proportional "
            f"to CTR^(1/{ope['policy_temperature']:g}) at every slot. A mean "
            "importance weight far from 1 means the policies barely overlap: trust SNIPS and DR "
            "over IPS there."
        ),
        ope_chart=_bars(
            "ope-dr", "DR estimate of each policy (95% CI)", dr_rows, "dr", "clicks per impression"
        ),
        validation_header=["estimator", "estimate", "truth", "error", "CI covers truth"],
        validation_rows=validation_rows,
        validation_note=(
            "The uniform-random policy, estimated from the Thompson-sampling test logs with their "
            "propensities; the truth is its on-policy click rate on the random test logs of the "
            f"same days ({check['rounds']} impressions)."
        ),
        manifest=json.dumps(manifest, indent=2, default=str) if manifest else None,
    )
    return page


def render_ctr_report(
    report: Mapping[str, Any], curves: Mapping[str, ReliabilityBins], path: str | Path
) -> Path:
    """Write ``report.html`` (``path`` is the file or an existing folder)."""
    target = Path(path)
    if target.is_dir():
        target = target / "report.html"
    page = ctr_report_html(report, curves)
    target.write_text(page, encoding="utf-8")
    logger.info("wrote %s (%d bytes)", target, len(page))
    return target
