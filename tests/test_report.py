"""The HTML report: parsed with html.parser, every section, chart and value is checked."""

from __future__ import annotations

import copy
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from shopaug.errors import DataError
from shopaug.eval.report import NOT_MEASURED, render_report


def metric(mean: float, low: float | None, high: float | None, folds: list[float]) -> dict:
    return {"mean": mean, "ci95": [low, high], "per_fold": folds}


def full_report() -> dict[str, Any]:
    return {
        "dataset": "wands <subset> & co",
        "retriever": "minilm-ft",
        "folds": 3,
        "metrics": {
            "ndcg@10": metric(0.4123, 0.3901, 0.4345, [0.4011, 0.4123, 0.4235]),
            "recall@100": metric(0.8012, 0.7702, 0.8322, [0.7856, 0.8012, 0.8168]),
        },
        "ablation": [
            {
                "name": "bm25",
                "metrics": {"ndcg@10": metric(0.3511, 0.3402, 0.3620, [0.35, 0.3511, 0.3522])},
                "p_value_vs_zero_shot": 0.2471,
                "p_value_vs_bm25": None,
            },
            {
                "name": "+ hard negatives <mined>",
                "metrics": {"ndcg@10": metric(0.4123, 0.3901, 0.4345, [0.4, 0.41, 0.42])},
                "p_value_vs_zero_shot": 0.0123,
                "p_value_vs_bm25": 0.00002,
            },
        ],
        "segments": {"head": {"ndcg@10": 0.4876}, "tail": {"ndcg@10": 0.2934}},
        "curves": {
            "fold 1": [
                {"step": 0, "loss": 2.5, "val_ndcg@10": 0.31},
                {"step": 100, "loss": 1.25, "val_ndcg@10": None},
                {"step": 200, "loss": 0.75, "val_ndcg@10": 0.39},
            ],
            "fold 2": [{"step": 0, "loss": 2.4}, {"step": 100, "loss": 1.1}],
        },
        "manifest": {"seed": 13, "versions": {"shopaug": "0.1.0"}, "data_sha256": "abc123"},
    }


class Page(HTMLParser):
    """Collects sections (text by id), SVG charts (title, rects, error bars) and tag counts."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.attributes: list[tuple[str, str, str | None]] = []
        self.section_text: dict[str, str] = {}
        self.plots: dict[str, dict[str, Any]] = {}
        self.meta: list[dict[str, str | None]] = []
        self._section: str | None = None
        self._plot: str | None = None
        self._stack: list[str] = []
        self._rect: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.attributes += [(tag, name, value) for name, value in attrs]
        self._stack.append(tag)
        if tag == "meta":
            self.meta.append(attributes)
        if tag == "section":
            self._section = attributes["id"]
            self.section_text[self._section or ""] = ""
        if tag == "svg":
            self._plot = attributes.get("data-plot")
            self.plots[self._plot or ""] = {
                "title": "",
                "section": self._section,
                "rects": [],
                "error_bars": 0,
                "series": [],
            }
        if self._plot is not None:
            plot = self.plots[self._plot]
            if tag == "rect" and "height" in attributes:
                self._rect = {"height": float(attributes["height"] or 0), "width": 0, "tip": ""}
                self._rect["width"] = float(attributes["width"] or 0)
                plot["rects"].append(self._rect)
            if tag == "path" and attributes.get("class") == "error-bar":
                plot["error_bars"] += 1
            if tag == "polyline":
                plot["series"].append(attributes.get("data-series"))

    def handle_endtag(self, tag: str) -> None:
        while self._stack and self._stack.pop() != tag:
            pass
        if tag == "svg":
            self._plot = None
        if tag == "section":
            self._section = None
        if tag == "rect":
            self._rect = None

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_data(self, data: str) -> None:
        if self._section is not None:
            self.section_text[self._section] += data + " "
        if self._stack and self._stack[-1] == "title" and self._plot is not None:
            if self._rect is not None:
                self._rect["tip"] += data
            elif len(self._stack) >= 2 and self._stack[-2] == "svg":
                self.plots[self._plot]["title"] += data


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


SECTIONS = ["summary", "metrics", "per-fold", "ablation", "segments", "curves", "manifest"]
PLOTS = ["per-fold", "ablation", "segments", "training-loss", "validation-ndcg@10"]


@pytest.fixture
def page(tmp_path: Path) -> Page:
    return parse(render_report(full_report(), tmp_path))


def test_every_section_and_plot_is_present_with_a_title(page: Page) -> None:
    assert list(page.section_text) == SECTIONS
    assert sorted(page.plots) == sorted(PLOTS)
    for name, plot in page.plots.items():
        assert plot["title"].strip(), f"plot {name} has no <title>"
    assert page.plots["training-loss"]["section"] == "curves"
    assert page.plots["ablation"]["section"] == "ablation"
    assert NOT_MEASURED not in " ".join(page.section_text.values())


def test_values_appear_in_their_sections(page: Page) -> None:
    text = page.section_text
    assert "wands <subset> & co" in text["summary"]  # unescaped by the parser: it was escaped
    for value in ["0.4123", "[0.3901, 0.4345]", "0.4011", "0.4235", "0.8012", "recall@100"]:
        assert value in text["metrics"], value
    for value in ["bm25", "+ hard negatives <mined>", "0.3511", "0.2471", "0.0123", "2.0e-05"]:
        assert value in text["ablation"], value
    assert "n/a" in text["ablation"]  # bm25 has no p-value against itself
    assert "0.4876" in text["segments"] and "0.2934" in text["segments"]
    assert "abc123" in text["manifest"] and "0.1.0" in text["manifest"]


def test_per_fold_chart_draws_each_fold_and_a_mean_with_ci(page: Page) -> None:
    plot = page.plots["per-fold"]
    # 2 metrics x (3 folds + 1 mean) bars, and one error bar per metric mean
    tips = [rect["tip"] for rect in plot["rects"] if rect["tip"]]
    assert len(tips) == 8
    assert plot["error_bars"] == 2
    assert "ndcg@10 mean: 0.4123 (95% CI 0.3901 to 0.4345)" in tips
    height = {rect["tip"]: rect["height"] for rect in plot["rects"] if rect["tip"]}
    # Bar heights are proportional to the values (the axis starts at 0).
    ratio = height["recall@100 fold 1: 0.7856"] / height["ndcg@10 fold 1: 0.4011"]
    assert ratio == pytest.approx(0.7856 / 0.4011, rel=0.01)


def test_ablation_and_segment_charts_reflect_the_data(page: Page) -> None:
    ablation = page.plots["ablation"]
    widths = {rect["tip"]: rect["width"] for rect in ablation["rects"] if rect["tip"]}
    assert widths["+ hard negatives <mined>: 0.4123"] / widths["bm25: 0.3511"] == pytest.approx(
        0.4123 / 0.3511, rel=0.01
    )
    assert ablation["error_bars"] == 2
    segment_tips = [rect["tip"] for rect in page.plots["segments"]["rects"] if rect["tip"]]
    assert segment_tips == ["ndcg@10 head: 0.4876", "ndcg@10 tail: 0.2934"]


def test_segment_counts_stay_in_the_table(tmp_path: Path) -> None:
    report = full_report()
    report["segments"] = {
        "head": {"bm25 ndcg@10": 0.5, "queries": 120.0},
        "tail": {"bm25 ndcg@10": 0.25, "queries": 80.0},
    }
    page = parse(render_report(report, tmp_path))
    tips = [rect["tip"] for rect in page.plots["segments"]["rects"] if rect["tip"]]
    assert tips == ["bm25 ndcg@10 head: 0.5000", "bm25 ndcg@10 tail: 0.2500"]
    assert (
        "120" in page.section_text["segments"] and "120.0000" not in page.section_text["segments"]
    )


def test_curves_have_one_line_per_run(page: Page) -> None:
    assert page.plots["training-loss"]["series"] == ["fold 1", "fold 2"]
    # fold 2 has no validation points, so the validation chart has one line
    assert page.plots["validation-ndcg@10"]["series"] == ["fold 1"]


def test_self_contained_and_escaped(tmp_path: Path) -> None:
    report = full_report()
    report["manifest"]["note"] = "<script>alert('x')</script>"
    report["retriever"] = '"><img src=x onerror=alert(1)>'
    page = parse(render_report(report, tmp_path / "report.html"))
    assert "script" not in page.tags and "img" not in page.tags
    assert "link" not in page.tags
    assert "<script>alert('x')</script>" in page.section_text["manifest"]
    urls = [(tag, name, value) for tag, name, value in page.attributes if name in {"src", "href"}]
    assert urls == []
    policy = [m.get("content") or "" for m in page.meta if m.get("http-equiv")]
    assert policy and "default-src 'none'" in policy[0]


def test_missing_sections_say_not_measured(tmp_path: Path) -> None:
    report = full_report()
    for key in ("ablation", "segments", "curves", "manifest"):
        del report[key]
    page = parse(render_report(report, tmp_path))
    for section in ("ablation", "segments", "curves", "manifest"):
        assert NOT_MEASURED in page.section_text[section], section
    assert sorted(page.plots) == ["per-fold"]
    assert NOT_MEASURED not in page.section_text["metrics"]


def test_single_fold_without_interval(tmp_path: Path) -> None:
    report = {
        "dataset": "d",
        "retriever": "r",
        "folds": 1,
        "metrics": {"mrr@10": metric(0.5, None, None, [0.5])},
        "curves": {},
    }
    page = parse(render_report(report, tmp_path / "deep" / "r.html"))
    assert "n/a" in page.section_text["metrics"]
    assert page.plots["per-fold"]["error_bars"] == 0
    assert NOT_MEASURED in page.section_text["curves"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.pop("metrics"), "metrics"),
        (lambda r: r.update(folds="five"), "folds"),
        (lambda r: r["metrics"].update({"ndcg@10": {"ci95": [0, 1]}}), "metrics.ndcg@10"),
        (lambda r: r["metrics"]["ndcg@10"].update(ci95=[0.1]), "metrics.ndcg@10"),
        (lambda r: r["ablation"].append({"metrics": {}}), "ablation[2]"),
        (lambda r: r.update(segments=[1, 2]), "segments"),
    ],
)
def test_bad_reports_name_the_field(tmp_path: Path, change: Any, field: str) -> None:
    report = copy.deepcopy(full_report())
    change(report)
    with pytest.raises(DataError) as error:
        render_report(report, tmp_path)
    assert error.value.field == field
    assert not (tmp_path / "report.html").exists()
