"""Honest evaluation: per-query metrics, significance, TREC files, segments and the HTML report.

The public names are imported lazily on first use (``scipy.stats`` is only loaded when a
significance function is used), so ``import shopaug.eval`` stays cheap.

- :mod:`shopaug.eval.metrics`: ``ndcg_at_k``, ``recall_at_k``, ``precision_at_k``,
  ``mrr_at_k``, ``average_precision_at_k``, ``evaluate_run``, ``metric_names``,
  ``parse_metric_name``.
- :mod:`shopaug.eval.significance`: ``confidence_interval``, ``paired_test``,
  ``PairedTestResult``, ``fold_summary``.
- :mod:`shopaug.eval.trec`: ``write_trec_run``, ``write_trec_qrels``, ``read_trec_run``,
  ``read_trec_qrels``.
- :mod:`shopaug.eval.segments`: ``popularity_segments``, ``tail_share``, ``coverage``, ``gini``,
  ``mean_by_segment``.
- :mod:`shopaug.eval.report`: ``render_report``, ``report_html``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shopaug.eval.metrics import (
        DEFAULT_METRICS,
        average_precision_at_k,
        dcg_at_k,
        evaluate_run,
        metric_names,
        mrr_at_k,
        ndcg_at_k,
        parse_metric_name,
        precision_at_k,
        recall_at_k,
    )
    from shopaug.eval.report import render_report, report_html
    from shopaug.eval.segments import (
        coverage,
        gini,
        mean_by_segment,
        popularity_segments,
        tail_share,
    )
    from shopaug.eval.significance import (
        PairedTestResult,
        confidence_interval,
        fold_summary,
        paired_test,
    )
    from shopaug.eval.trec import read_trec_qrels, read_trec_run, write_trec_qrels, write_trec_run

_MODULE_OF: dict[str, str] = {
    "DEFAULT_METRICS": "metrics",
    "average_precision_at_k": "metrics",
    "dcg_at_k": "metrics",
    "evaluate_run": "metrics",
    "metric_names": "metrics",
    "mrr_at_k": "metrics",
    "ndcg_at_k": "metrics",
    "parse_metric_name": "metrics",
    "precision_at_k": "metrics",
    "recall_at_k": "metrics",
    "PairedTestResult": "significance",
    "confidence_interval": "significance",
    "fold_summary": "significance",
    "paired_test": "significance",
    "read_trec_qrels": "trec",
    "read_trec_run": "trec",
    "write_trec_qrels": "trec",
    "write_trec_run": "trec",
    "coverage": "segments",
    "gini": "segments",
    "mean_by_segment": "segments",
    "popularity_segments": "segments",
    "tail_share": "segments",
    "render_report": "report",
    "report_html": "report",
}

__all__ = [
    "DEFAULT_METRICS",
    "PairedTestResult",
    "average_precision_at_k",
    "confidence_interval",
    "coverage",
    "dcg_at_k",
    "evaluate_run",
    "fold_summary",
    "gini",
    "mean_by_segment",
    "metric_names",
    "mrr_at_k",
    "ndcg_at_k",
    "paired_test",
    "parse_metric_name",
    "popularity_segments",
    "precision_at_k",
    "read_trec_qrels",
    "read_trec_run",
    "recall_at_k",
    "render_report",
    "report_html",
    "tail_share",
    "write_trec_qrels",
    "write_trec_run",
]  # the keys of _MODULE_OF


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'shopaug.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"shopaug.eval.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
