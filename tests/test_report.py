"""The HTML report: parsed with html.parser; every section, table, chart and value is checked."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from shopaug.errors import DataError
from shopaug.eval.report import NOT_MEASURED, SELECTION_NOTE, render_report

SELECTED = "+ hard negatives <mined>"
LONG_NAME = "augmented+hard-negatives+popularity-sampler+logQ-correction+dynamic-pool-refresh"


def metric(mean: float, low: float | None, high: float | None, folds: list[float]) -> dict:
    return {"mean": mean, "ci95": [low, high], "per_fold": folds}


def row(name: str, kind: str, ndcg: float, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "metrics": {
            "ndcg@10": metric(ndcg, ndcg - 0.02, ndcg + 0.02, [ndcg - 0.01, ndcg, ndcg + 0.01]),
            "recall@100": metric(ndcg + 0.4, ndcg + 0.38, ndcg + 0.42, [ndcg + 0.4] * 3),
            "mrr@10": metric(ndcg + 0.1, ndcg + 0.08, ndcg + 0.12, [ndcg + 0.1] * 3),
        },
        "ndcg@10_exact": metric(ndcg + 0.03, ndcg + 0.01, ndcg + 0.05, [ndcg + 0.03] * 3),
        "bootstrap_ci95": {"ndcg@10": [ndcg - 0.015, ndcg + 0.015]},
        "validation": {"ndcg@10": ndcg + 0.05},
        **extra,
    }


def fused(of: str, method: str, ndcg: float, **extra: Any) -> dict[str, Any]:
    """A fusion row as ``shopaug run`` writes it: after every trained row, pointing back."""
    return row(f"{of} + bm25 ({method})", "fusion", ndcg, of=of, **extra)


def versus(difference: float, low: float, high: float, p_value: float) -> dict[str, Any]:
    return {
        "queries": 200,
        "mean_difference": difference,
        "ci95": [low, high],
        "p_value_bootstrap": p_value / 2,
        "p_value": p_value,
    }


def full_report() -> dict[str, Any]:
    trained = {
        "epochs": 2,
        "steps": 400,
        "train_seconds_per_fold": 61.5,
        "examples": 12800,
        "groups": 3200,
    }
    return {
        "dataset": "wands <subset> & co",
        "retriever": "minilm-ft",
        "folds": 3,
        "trained_folds": 3,
        "tower": "query",
        "train": {"batch_size": 64, "lr": 2e-05, "loss": "infonce <multi>"},
        "queries": {"validation": 96, "test": 480},
        "served": {
            "system": SELECTED,
            "row": SELECTED,
            "model_dir": "runs/wands <new>/model",
            "epochs": 2,
            "queries": 480,
        },
        "best_row": SELECTED,
        "selected": {
            "system": SELECTED,
            "by": "validation ndcg@10",
            "validation": {"ndcg@10": 0.4623},
        },
        "metrics": {
            "ndcg@10": metric(0.4123, 0.3901, 0.4345, [0.4011, 0.4123, 0.4235]),
            "recall@100": metric(0.8012, 0.7702, 0.8322, [0.7856, 0.8012, 0.8168]),
        },
        "ablation": [
            row("bm25", "baseline", 0.3511, p_value_vs_bm25=None, p_value_vs_zero_shot=0.2471),
            row("zero-shot", "baseline", 0.3320, p_value_vs_bm25=0.2471),
            row("zero-shot hybrid", "fusion", 0.3702, p_value_vs_bm25=0.031),
            row("plain fine-tune", "fine-tune", 0.3950, p_value_vs_bm25=0.004, **trained),
            row(
                SELECTED,
                "augmented",
                0.4123,
                p_value_vs_plain_fine_tune=0.0123,
                p_value_vs_zero_shot_hybrid=0.0008,
                p_value_vs_bm25=0.00002,
                p_value_vs_zero_shot=0.00001,
                vs_plain_fine_tune=versus(0.0173, 0.0051, 0.0302, 0.0123),
                vs_zero_shot_hybrid=versus(0.0421, 0.021, 0.063, 0.0008),
                unknown_extra_key={"ignored": True},
                **trained,
            ),
            row(LONG_NAME, "augmented", 0.4050, p_value_vs_plain_fine_tune=0.21, **trained),
            fused("plain fine-tune", "rrf", 0.3990),
            fused("plain fine-tune", "convex", 0.4001, weight=[0.6, 0.5, 0.6]),
            fused(SELECTED, "rrf", 0.4150),
            fused(SELECTED, "convex", 0.4170, weight=[0.7, 0.6, 0.6]),
            row("reranker", "reranker", 0.4201, p_value_vs_bm25=0.00001, of=SELECTED),
        ],
        "segments": {
            "head": {
                "bm25 ndcg@10": 0.5012,
                "zero-shot ndcg@10": 0.4711,
                f"{SELECTED} ndcg@10": 0.4876,
                "reranker ndcg@10": 0.4990,
                "queries": 120.0,
            },
            "tail": {
                "bm25 ndcg@10": 0.2201,
                "zero-shot ndcg@10": 0.2455,
                f"{SELECTED} ndcg@10": 0.2934,
                "reranker ndcg@10": 0.3010,
                "queries": 80.0,
            },
        },
        "curves": {
            "plain fine-tune": [
                {"step": 0, "epoch": 0, "loss": 2.5, "val_ndcg@10": 0.31},
                {"step": 100, "epoch": 0, "loss": 1.25, "val_ndcg@10": None},
                {"step": 200, "epoch": 1, "loss": 0.75, "val_ndcg@10": 0.39},
            ],
            SELECTED: [
                {"step": 0, "epoch": 0, "loss": 2.4, "val_ndcg@10": 0.32},
                {"step": 200, "epoch": 1, "loss": 0.7, "val_ndcg@10": 0.44},
                {"step": 400, "epoch": 2, "loss": 0.5, "val_ndcg@10": 0.46},
            ],
            "loss only": [{"step": 0, "loss": 2.4}, {"step": 100, "loss": 1.1}],
        },
        "audit": [
            {
                "method": "hard negatives (rank 11-100)",
                "negatives": 5120,
                "fn_rate_exact": 0.083,
                "fn_rate_exact_or_partial": 0.271,
                "tail_share": 0.64,
            },
            {
                "method": "random",
                "negatives": 5120,
                "fn_rate_exact": 0.004,
                "fn_rate_exact_or_partial": 0.019,
                "tail_share": 0.79,
            },
        ],
        "reranker": {
            "first_stage": SELECTED,
            "served": False,
            "validation_first_stage": 0.4623,
            "validation_reranked": 0.4602,
        },
        "manifest": {"seed": 13, "versions": {"shopaug": "0.1.0"}, "data_sha256": "abc123"},
    }


class Page(HTMLParser):
    """Collects section text (by id), tables (cell text), SVG charts (their text, bar and
    error-bar geometry) and every tag and attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.attributes: list[tuple[str, str, str | None]] = []
        self.section_text: dict[str, str] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.row_classes: dict[str, list[str]] = {}
        self.plots: dict[str, dict[str, Any]] = {}
        self.meta: list[dict[str, str | None]] = []
        self.title = ""
        self._section: str | None = None
        self._plot: str | None = None
        self._group: list[str | None] = []
        self._stack: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.attributes += [(tag, name, value) for name, value in attrs]
        self._stack.append(tag)
        if tag == "meta":
            self.meta.append(attributes)
        if tag == "section":
            self._section = attributes["id"] or ""
            self.section_text[self._section] = ""
        if tag == "tr" and self._section is not None:
            self.tables.setdefault(self._section, []).append([])
            self.row_classes.setdefault(self._section, []).append(attributes.get("class") or "")
        if tag in {"td", "th"} and self._section is not None:
            self._cell = self.tables[self._section][-1]
            self._cell.append("")
        if tag == "svg":
            self._plot = attributes.get("data-plot") or ""
            self.plots[self._plot] = {"section": self._section, "title": "", "text": []}
            self.plots[self._plot].update(bars={}, error_bars=set())
        if self._plot is not None and tag == "g":
            self._group.append(attributes.get("id"))
        if self._plot is not None and tag == "path" and self._group:
            self._path(self._group[-1] or "", attributes.get("d") or "")

    def _path(self, group: str, d: str) -> None:
        plot = self.plots[self._plot or ""]
        bar = re.fullmatch(r".*--bar-(\d+)-(\d+)", group)
        if bar:
            xs = [float(x) for x in re.findall(r"([-\d.]+) [-\d.]+", d)]
            plot["bars"][(int(bar[1]), int(bar[2]))] = max(xs) - min(xs)
        error = re.fullmatch(r".*--error-bars-(\d+)", group)
        if error:
            plot["error_bars"].add(int(error[1]))

    def handle_endtag(self, tag: str) -> None:
        while self._stack and self._stack.pop() != tag:
            pass
        if tag == "svg":
            self._plot = None
        if tag == "g" and self._group:
            self._group.pop()
        if tag == "section":
            self._section = None
        if tag in {"td", "th"}:
            self._cell = None

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_data(self, data: str) -> None:
        if self._stack and self._stack[-1] == "title" and self._plot is None:
            self.title += data
        if self._section is not None:
            self.section_text[self._section] += data + " "
        if self._cell is not None:
            self._cell[-1] += data
        if self._plot is not None and self._stack:
            if self._stack[-1] == "text":
                self.plots[self._plot]["text"].append(data)
            if self._stack[-1] == "title" and self._stack[-2] == "svg":
                self.plots[self._plot]["title"] += data


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


SECTIONS = [
    "summary",
    "metrics",
    "served",
    "ablation",
    "segments",
    "curves",
    "audit",
    "reranker",
    "manifest",
]
PLOTS = ["ablation", "segments", "validation-ndcg@10", "training-loss", "audit"]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Page:
    return parse(render_report(full_report(), tmp_path_factory.mktemp("report")))


def test_every_section_and_plot_is_present_with_a_title(page: Page) -> None:
    assert list(page.section_text) == SECTIONS
    assert sorted(page.plots) == sorted(PLOTS)
    for name, plot in page.plots.items():
        assert plot["title"].strip(), f"plot {name} has no <title>"
    assert page.plots["validation-ndcg@10"]["section"] == "curves"
    assert page.plots["ablation"]["section"] == "ablation"
    assert page.plots["audit"]["section"] == "audit"
    assert NOT_MEASURED not in " ".join(page.section_text.values())


def test_the_selected_system_leads_the_page(page: Page) -> None:
    assert page.title == f"shopaug report: {SELECTED} on wands <subset> & co"
    summary = page.section_text["summary"]
    assert "Selected system" in summary and SELECTED in summary and SELECTION_NOTE in summary
    assert "validation ndcg@10" in summary and "0.4623" in summary  # chosen on validation
    assert "test ndcg@10" in summary and "0.4123" in summary  # the test score, once
    ablation = page.tables["ablation"]
    classes = page.row_classes["ablation"]
    selected_rows = [i for i, css in enumerate(classes) if "selected" in css.split()]
    assert [ablation[i][0] for i in selected_rows] == [f"{SELECTED} selected"]
    labels = page.plots["ablation"]["text"]
    assert labels[labels.index(SELECTED) + 1] == "(selected)"  # the chart marks it too


def test_values_appear_in_their_tables(page: Page) -> None:
    metrics = page.tables["metrics"]
    assert metrics[0] == ["metric", "mean", "95% CI", "fold 1", "fold 2", "fold 3"]
    assert metrics[1] == ["ndcg@10", "0.4123", "[0.3901, 0.4345]", "0.4011", "0.4123", "0.4235"]
    header, *rows = page.tables["ablation"]
    assert header == [
        "system",
        "kind",
        "validation ndcg@10",
        "ndcg@10",
        "recall@100",
        "mrr@10",
        "ndcg@10 (Exact only)",
        "p vs plain fine-tune (Δ, 95% CI)",
        "p vs zero-shot hybrid (Δ, 95% CI)",
        "p vs BM25",
        "p vs zero-shot",
        "training",
    ]
    by_name = {cells[0].removesuffix(" selected"): dict(zip(header, cells)) for cells in rows}
    assert next(iter(by_name)) == "bm25" and LONG_NAME in by_name
    chosen = by_name[SELECTED]
    assert chosen["kind"] == "augmented" and chosen["validation ndcg@10"] == "0.4623"
    assert chosen["ndcg@10"] == "0.4123[0.392, 0.432]boot [0.397, 0.427]"
    assert chosen["ndcg@10 (Exact only)"] == "0.4423[0.422, 0.462]"
    assert chosen["p vs BM25"] == "2.0e-05"
    assert chosen["p vs plain fine-tune (Δ, 95% CI)"] == "0.0123Δ +0.0173[0.005, 0.030]"
    assert chosen["p vs zero-shot hybrid (Δ, 95% CI)"] == "0.0008Δ +0.0421[0.021, 0.063]"
    assert chosen["training"] == "400 steps2 epochs61.5 s / fold12,800 examples3,200 groups"
    assert by_name["bm25"]["p vs BM25"] == "n/a" and by_name["bm25"]["training"] == "n/a"
    assert by_name[LONG_NAME]["p vs plain fine-tune (Δ, 95% CI)"] == "0.2100"  # no Δ given
    weights = "dense weight per fold: 0.6, 0.5, 0.6"
    assert f"plain fine-tune + bm25 (convex){weights}" in by_name  # the fold's picks
    assert f"rerankeron {SELECTED}" in by_name  # what it builds on, when its name does not say
    assert "ignored" not in page.section_text["ablation"]
    segments = page.tables["segments"]
    assert segments[1][0] == "head" and "0.4876" in segments[1] and "120" in segments[1]
    assert "120.0000" not in page.section_text["segments"]  # counts are not scores
    audit = ["hard negatives (rank 11-100)", "5120", "8.3%", "27.1%", "64.0%"]
    assert page.tables["audit"][1] == audit
    reranker = " ".join(page.section_text["reranker"].split())
    assert "Not served: the reranker did not beat its first stage" in reranker
    assert f"({SELECTED})" in reranker and "(0.4602 against 0.4623)" in reranker
    assert "abc123" in page.section_text["manifest"]


def test_p_values_below_005_are_bold(tmp_path: Path) -> None:
    text = Path(render_report(full_report(), tmp_path)).read_text(encoding="utf-8")
    assert '<td class="num significant"><span class="value">2.0e-05</span>' in text
    assert '<td class="num"><span class="value">0.2471</span>' in text


def test_ablation_bars_are_proportional_with_an_interval_each(page: Page) -> None:
    bars = page.plots["ablation"]["bars"]
    assert len(bars) == 11 and page.plots["ablation"]["error_bars"] == {0}
    # bar (series 0, row 6) is the selected system, after plain fine-tune and its two fusions;
    # row 0 is bm25; the x axis starts at 0
    assert bars[(0, 6)] / bars[(0, 0)] == pytest.approx(0.4123 / 0.3511, rel=1e-3)
    labels = page.plots["ablation"]["text"]
    assert "bm25" in labels and "reranker" in labels
    assert "augmented" in labels and "fusion" in labels  # the kind legend


def test_segment_chart_draws_scores_not_counts(page: Page) -> None:
    plot = page.plots["segments"]
    assert sorted(plot["bars"]) == [(s, r) for s in (0, 1) for r in range(4)]  # head, tail x 4
    assert plot["bars"][(1, 2)] / plot["bars"][(0, 2)] == pytest.approx(0.2934 / 0.4876, 1e-3)
    assert "queries" not in plot["text"] and {"head", "tail"} <= set(plot["text"])


def test_curves_have_one_line_per_row_with_points(page: Page) -> None:
    validation = page.plots["validation-ndcg@10"]["text"]
    assert "plain fine-tune" in validation and SELECTED in validation
    assert "loss only" not in validation  # no validation points, no line
    assert "loss only" in page.plots["training-loss"]["text"]
    assert "step" in validation


def test_audit_chart_in_percent(page: Page) -> None:
    plot = page.plots["audit"]
    assert plot["bars"][(1, 0)] / plot["bars"][(0, 0)] == pytest.approx(0.271 / 0.083, rel=1e-3)
    assert any(text.endswith("%") for text in plot["text"])


def test_user_text_is_escaped_and_the_page_self_contained(tmp_path: Path) -> None:
    report = full_report()
    attack = "<script>alert('x')</script>"
    report["dataset"] = '"><img src=x onerror=alert(1)>'
    report["manifest"]["note"] = attack
    report["ablation"][0]["name"] = attack
    report["ablation"][0]["kind"] = "<b>kind</b>"
    report["segments"]["head"][f"{attack} ndcg@10"] = 0.1
    report["curves"][attack] = [{"step": 1, "loss": 1.0, "val_ndcg@10": 0.2}]
    report["audit"][0]["method"] = "<iframe src=http://example.com>"
    report["served"]["model_dir"] = attack
    report["train"]["note"] = attack
    report["reranker"]["first_stage"] = attack
    report["ablation"][7]["of"] = attack
    path = render_report(report, tmp_path / "report.html")
    page = parse(path)
    assert {"script", "img", "b", "iframe", "link"}.isdisjoint(page.tags)
    assert attack in page.section_text["manifest"] and attack in page.section_text["ablation"]
    assert attack in page.plots["ablation"]["text"]  # drawn as text in the chart
    assert attack in page.plots["validation-ndcg@10"]["text"]
    assert attack in page.section_text["served"] and attack in page.section_text["reranker"]
    assert f"note = {attack}" in page.section_text["summary"]
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"<(script|link|iframe|img)\b", text, re.IGNORECASE)
    assert not re.search(r"url\(\s*[\"']?(https?:)?//", text, re.IGNORECASE)
    assert "@import" not in text
    hrefs = [value for tag, name, value in page.attributes if name in {"src", "href"}]
    assert hrefs == []
    remote = [
        (tag, name, value)
        for tag, name, value in page.attributes
        if not name.startswith("xmlns") and re.search(r"(https?:)?//", value or "")
    ]
    assert remote == []
    references = {v for _, name, v in page.attributes if name == "xlink:href"}
    assert all(ref and ref.startswith("#") for ref in references)  # inside the page only
    policy = [m.get("content") or "" for m in page.meta if m.get("http-equiv")]
    assert policy and "default-src 'none'" in policy[0]


def test_a_dollar_in_a_name_is_text_not_mathtext(tmp_path: Path) -> None:
    report = full_report()
    report["ablation"][1]["name"] = "price $x$ boost $"
    page = parse(render_report(report, tmp_path))
    assert "price $x$ boost $" in page.plots["ablation"]["text"]


def test_chart_ids_are_unique_on_the_page(page: Page) -> None:
    ids = [value for _, name, value in page.attributes if name == "id"]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    "key",
    [
        "ablation",
        "selected",
        "metrics",
        "served",
        "segments",
        "curves",
        "audit",
        "reranker",
        "manifest",
    ],
)
def test_each_optional_key_may_be_missing(tmp_path: Path, key: str) -> None:
    report = full_report()
    del report[key]
    page = parse(render_report(report, tmp_path))
    assert list(page.section_text) == SECTIONS
    section = {"selected": "summary"}.get(key, key)
    if key == "selected":
        assert SELECTION_NOTE not in page.section_text["summary"]  # best_row is not a selection
        assert "Reported system" in page.section_text["summary"]
        assert "selected" not in page.row_classes["ablation"]  # no row is marked either
    else:
        assert NOT_MEASURED in page.section_text[section], section
    others = [s for s in SECTIONS if s not in {section, "summary"}]
    assert all(NOT_MEASURED not in page.section_text[s] for s in others)


def test_only_a_dataset_is_needed(tmp_path: Path) -> None:
    page = parse(render_report({"dataset": "d"}, tmp_path / "deep" / "r.html"))
    assert list(page.section_text) == SECTIONS
    for section in SECTIONS[1:]:
        assert NOT_MEASURED in page.section_text[section], section
    assert page.plots == {}


def test_single_fold_without_interval(tmp_path: Path) -> None:
    report = full_report()
    report["metrics"] = {"mrr@10": metric(0.5, None, None, [0.5])}
    for entry in report["ablation"]:
        entry["metrics"]["ndcg@10"]["ci95"] = [None, None]
        entry.pop("bootstrap_ci95")
    report["ablation"][0]["bootstrap_ci95"] = {"ndcg@10": [0.34, 0.36]}
    page = parse(render_report(report, tmp_path))
    assert page.tables["metrics"][1] == ["mrr@10", "0.5000", "n/a", "0.5000"]
    # only bm25 has an interval left (its bootstrap one), so one error bar is drawn
    assert page.plots["ablation"]["error_bars"] == {0}
    assert "test mrr@10" in page.section_text["summary"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.pop("dataset"), "dataset"),
        (lambda r: r.update(folds="five"), "folds"),
        (lambda r: r["metrics"].update({"ndcg@10": {"ci95": [0, 1]}}), "metrics.ndcg@10"),
        (lambda r: r["metrics"]["ndcg@10"].update(ci95=[0.1]), "metrics.ndcg@10"),
        (lambda r: r["ablation"].append({"metrics": {}}), "ablation[11]"),
        (lambda r: r["ablation"][1]["metrics"]["mrr@10"].update(mean="high"), "ablation[1]"),
        (lambda r: r.update(segments=[1, 2]), "segments"),
        (lambda r: r.update(audit={"method": "x"}), "audit"),
        (lambda r: r["audit"].append({"negatives": 3}), "audit[2]"),
        (lambda r: r.update(selected={"by": "validation ndcg@10"}), "selected.system"),
        (lambda r: r["selected"].update(validation=0.4), "selected.validation"),
        (lambda r: r["ablation"][2].update(validation=[0.4]), "ablation[2].validation"),
        (lambda r: r["segments"].update(tail=0.3), "segments.tail"),
        (lambda r: r["curves"].update(broken=[1.0]), "curves.broken[0]"),
        (lambda r: r.update(curves={"row": {"step": 1}}), "curves.row"),
        (lambda r: r.update(tower=2), "tower"),
        (lambda r: r.update(served="model/"), "served"),
        (lambda r: r["served"].update(fusion="convex"), "served.fusion"),
        (lambda r: r.update(train=["lr"]), "train"),
        (lambda r: r.update(queries=96), "queries"),
        (lambda r: r["ablation"][8].update(weight=0.6), "ablation[8].weight"),
        (lambda r: r["ablation"][8].update(weight=[0.6, "high"]), "ablation[8].weight"),
        (lambda r: r["ablation"][4].update(vs_plain_fine_tune=0.01), "ablation[4].vs_plain"),
        (lambda r: r["ablation"][4].update({"ndcg@10_exact": 0.4}), "ablation[4].ndcg@10_exact"),
    ],
)
def test_bad_reports_name_the_field(tmp_path: Path, change: Any, field: str) -> None:
    report = copy.deepcopy(full_report())
    change(report)
    with pytest.raises(DataError) as error:
        render_report(report, tmp_path)
    assert (error.value.field or "").startswith(field)
    assert not (tmp_path / "report.html").exists()


def test_each_trained_row_is_followed_by_its_fusions(page: Page) -> None:
    names = [cells[0] for cells in page.tables["ablation"][1:]]
    assert [name.split("dense weight")[0].removesuffix(" selected") for name in names] == [
        "bm25",
        "zero-shot",
        "zero-shot hybrid",  # a baseline fusion with no "of" keeps its place
        "plain fine-tune",
        "plain fine-tune + bm25 (rrf)",
        "plain fine-tune + bm25 (convex)",
        SELECTED,
        f"{SELECTED} + bm25 (rrf)",
        f"{SELECTED} + bm25 (convex)",
        LONG_NAME,
        f"rerankeron {SELECTED}",
    ]
    classes = [css.split() for css in page.row_classes["ablation"][1:]]
    assert [i for i, css in enumerate(classes) if "group" in css] == [3, 6]
    assert [i for i, css in enumerate(classes) if "fused" in css] == [4, 5, 7, 8]
    labels = page.plots["ablation"]["text"]  # the chart keeps the table's order
    assert labels.index("plain fine-tune + bm25 (rrf)") < labels.index(SELECTED)


def test_the_run_card_gives_queries_tower_and_training_settings(page: Page) -> None:
    summary = " ".join(page.section_text["summary"].split())
    assert "validation queries (all folds) 96" in summary
    assert "test queries (all folds) 480" in summary
    assert "trained tower query (query encoder fine-tuned; catalog vectors frozen)" in summary
    assert "training settings batch_size = 64, lr = 2e-05, loss = infonce <multi>" in summary


@pytest.mark.parametrize("key", ["queries", "tower", "train"])
def test_run_card_keys_may_be_missing(tmp_path: Path, key: str) -> None:
    report = full_report()
    del report[key]
    summary = parse(render_report(report, tmp_path)).section_text["summary"]
    label = {"queries": "queries (all folds)", "tower": "trained tower", "train": "settings"}
    assert label[key] not in summary and "wands <subset> & co" in summary


def test_the_served_card_says_how_the_model_was_made(page: Page) -> None:
    served = " ".join(page.section_text["served"].split())
    assert "Retrained on every judged query with the configuration chosen on validation" in served
    assert "model folder runs/wands <new>/model" in served and "judged queries 480" in served
    assert "no held-out score" in served
    assert "fused with BM25" not in served  # no fusion in this run's served system


def test_a_served_fusion_and_reranker_and_a_note(tmp_path: Path) -> None:
    report = full_report()
    report["served"] = {
        "system": f"{SELECTED} + bm25 (convex) + reranker",
        "row": "bm25",
        "fusion": {"method": "convex", "weight": 0.6},
        "reranker": "chosen on validation; model/ holds its first stage",
        "note": "bm25 trains no model: the base model is what it serves",
    }
    report["reranker"]["served"] = True
    report["reranker"]["validation_reranked"] = 0.4702
    page = parse(render_report(report, tmp_path))
    served = " ".join(page.section_text["served"].split())
    assert "no model was retrained for serving" in served and "Retrained" not in served
    assert "fused with BM25 convex, weight 0.6" in served
    assert "reranker chosen on validation; model/ holds its first stage" in served
    assert "note bm25 trains no model" in served and "no held-out score" not in served
    reranker = " ".join(page.section_text["reranker"].split())
    assert f"Served: the reranker beat its first stage ({SELECTED})" in reranker
    assert "(0.4702 against 0.4623)" in reranker


def test_an_unrecorded_gate_is_said_so(tmp_path: Path) -> None:
    report = full_report()
    report["reranker"] = {"validation_reranked": 0.47}
    reranker = parse(render_report(report, tmp_path)).section_text["reranker"]
    assert "Whether the reranker is served is not recorded" in reranker
    assert "Served:" not in reranker and "Not served" not in reranker


def test_ablation_entries_without_the_new_keys(tmp_path: Path) -> None:
    report = full_report()
    for entry in report["ablation"]:
        for key in ("ndcg@10_exact", "vs_plain_fine_tune", "vs_zero_shot_hybrid", "of", "weight"):
            entry.pop(key, None)
    page = parse(render_report(report, tmp_path))
    header = page.tables["ablation"][0]
    assert "ndcg@10 (Exact only)" not in header
    assert "p vs plain fine-tune" in header and "p vs zero-shot hybrid" in header  # p only
    assert "Δ" not in page.section_text["ablation"]
    names = [cells[0] for cells in page.tables["ablation"][1:]]
    assert names[-1] == "reranker" and names[-2] == f"{SELECTED} + bm25 (convex)"  # as given
    assert not any("group" in css or "fused" in css for css in page.row_classes["ablation"])
