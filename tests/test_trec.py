"""TREC run and qrels files: exact text, round trips, errors, and what ranx/ir-measures read."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from shopaug.errors import DataError
from shopaug.eval.metrics import evaluate_run
from shopaug.eval.trec import read_trec_qrels, read_trec_run, write_trec_qrels, write_trec_run

RUN = {
    "q2": [("p7", 0.75), ("p1", 0.5), ("p3", 0.1)],
    "q1": [("p3", 12.0), ("p9", -1.25)],
}
QRELS = {"q2": {"p7": 0, "p1": 2}, "q1": {"p9": 1, "p4": 3}}


def test_written_run_text_is_exact(tmp_path: Path) -> None:
    path = write_trec_run(RUN, tmp_path / "out" / "run.trec", tag="dense", depth=2)
    assert path.read_text().splitlines() == [
        "q1 Q0 p3 1 12.0 dense",
        "q1 Q0 p9 2 -1.25 dense",
        "q2 Q0 p7 1 0.75 dense",
        "q2 Q0 p1 2 0.5 dense",  # depth=2 cuts p3
    ]


def test_written_qrels_text_is_exact(tmp_path: Path) -> None:
    path = write_trec_qrels({**QRELS, "q3": {"p5": 0.5}}, tmp_path / "qrels.txt")
    assert path.read_text().splitlines() == [
        "q1 0 p4 3",
        "q1 0 p9 1",
        "q2 0 p1 2",
        "q2 0 p7 0",
        "q3 0 p5 0.5",
    ]


def test_round_trip(tmp_path: Path) -> None:
    scores = np.random.default_rng(0).normal(size=5)
    run = {"q": [(f"p{i}", float(s)) for i, s in enumerate(sorted(scores, reverse=True))]}
    assert read_trec_run(write_trec_run(run, tmp_path / "r.trec", tag="t")) == run
    assert read_trec_qrels(write_trec_qrels(QRELS, tmp_path / "q.txt")) == QRELS


def test_reader_orders_by_rank_column_not_by_line(tmp_path: Path) -> None:
    path = tmp_path / "run.txt"
    path.write_text("q1 Q0 b 2 0.4 x\n\nq1 Q0 a 1 0.9 x\n")
    assert read_trec_run(path) == {"q1": [("a", 0.9), ("b", 0.4)]}


@pytest.mark.parametrize(
    ("run", "tag", "field"),
    [
        ({"q1": [("red shoe", 1.0)]}, "t", "product_id"),
        ({"q 1": [("p1", 1.0)]}, "t", "query_id"),
        ({"q1": [("p1", 1.0)]}, "my run", "tag"),
        ({"q1": [("p\t1", 1.0)]}, "t", "product_id"),
        ({"q1": [("", 1.0)]}, "t", "product_id"),
    ],
)
def test_ids_with_whitespace_are_rejected(
    tmp_path: Path, run: dict[str, list[tuple[str, float]]], tag: str, field: str
) -> None:
    with pytest.raises(DataError) as error:
        write_trec_run(run, tmp_path / "run.trec", tag=tag)
    assert error.value.field == field
    assert not (tmp_path / "run.trec").exists()  # nothing half-written


def test_qrels_with_whitespace_or_nan_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds whitespace"):
        write_trec_qrels({"q1": {"red shoe": 1}}, tmp_path / "q.txt")
    with pytest.raises(DataError, match="gain must be finite"):
        write_trec_qrels({"q1": {"p1": float("nan")}}, tmp_path / "q.txt")


def test_writer_rejects_duplicates_and_warns_on_ties(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(DataError, match="appears twice"):
        write_trec_run({"q1": [("a", 1.0), ("a", 0.5)]}, tmp_path / "r.trec", tag="t")
    with caplog.at_level(logging.WARNING, logger="shopaug.eval.trec"):
        write_trec_run({"q1": [("a", 1.0), ("b", 1.0)]}, tmp_path / "r.trec", tag="t")
    assert "1 queries have tied or increasing scores" in caplog.text


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("q1 Q0 a 1 0.5 t\nq1 Q0 b 2 0.4\n", "expected 6 fields", 2),
        ("q1 Q0 a one 0.5 t\n", "positive integer rank", 1),
        ("q1 Q0 a 1 high t\n", "expected a finite number", 1),
        ("q1 Q0 a 1 0.5 t\nq1 Q0 a 2 0.4 t\n", "appears twice", 2),
    ],
)
def test_run_reader_errors_name_file_and_line(
    tmp_path: Path, text: str, message: str, line: int
) -> None:
    path = tmp_path / "bad.trec"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as error:
        read_trec_run(path)
    assert error.value.line == line
    assert str(path) in str(error.value)


def test_qrels_reader_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.qrels"
    path.write_text("q1 0 a 1\nq1 0 a\n")
    with pytest.raises(DataError, match="expected 4 fields") as error:
        read_trec_qrels(path)
    assert error.value.line == 2
    path.write_text("q1 0 a 1\nq1 0 a 2\n")
    with pytest.raises(DataError, match="judged twice"):
        read_trec_qrels(path)


def _random_files(tmp_path: Path) -> tuple[dict[str, dict[str, float]], Path, Path]:
    rng = np.random.default_rng(4)
    run: dict[str, list[tuple[str, float]]] = {}
    qrels: dict[str, dict[str, float]] = {}
    for number in range(30):
        query_id = f"q{number}"
        pool = [f"p{index}" for index in rng.choice(200, size=80, replace=False)]
        qrels[query_id] = {product: int(rng.integers(0, 3)) for product in pool[:30]}
        qrels[query_id][pool[0]] = 2  # every query has a relevant product
        ranked = rng.permutation(pool)[:60]
        scores = np.sort(rng.random(60))[::-1]
        run[query_id] = [(str(p), float(s)) for p, s in zip(ranked, scores, strict=True)]
    run_path = write_trec_run(run, tmp_path / "run.trec", tag="random", depth=50)
    qrels_path = write_trec_qrels(qrels, tmp_path / "qrels.txt")
    return qrels, run_path, qrels_path


METRICS = ["ndcg@10", "recall@50", "mrr@10", "map@50", "precision@5"]


def test_ir_measures_reads_the_files_and_agrees(tmp_path: Path) -> None:
    ir_measures = pytest.importorskip("ir_measures")
    _, run_path, qrels_path = _random_files(tmp_path)
    ours = evaluate_run(read_trec_run(run_path), read_trec_qrels(qrels_path), metrics=METRICS)
    measures = [ir_measures.parse_measure(m) for m in ["nDCG@10", "R@50", "RR@10", "AP@50", "P@5"]]
    theirs = ir_measures.calc_aggregate(
        measures,
        ir_measures.read_trec_qrels(str(qrels_path)),
        ir_measures.read_trec_run(str(run_path)),
    )
    for ours_name, measure in zip(METRICS, measures, strict=True):
        assert ours[ours_name].mean() == pytest.approx(theirs[measure], abs=1e-12)


@pytest.mark.slow  # ranx compiles its numba kernels on first use
def test_ranx_reads_the_files_and_agrees(tmp_path: Path) -> None:
    ranx = pytest.importorskip("ranx")
    qrels, run_path, qrels_path = _random_files(tmp_path)
    ranx_qrels = ranx.Qrels.from_file(str(qrels_path), kind="trec")
    ranx_run = ranx.Run.from_file(str(run_path), kind="trec")
    assert ranx_run.name == "random"
    theirs = ranx.evaluate(ranx_qrels, ranx_run, METRICS, return_mean=False)
    ours = evaluate_run(
        read_trec_run(run_path), qrels, metrics=METRICS, query_ids=list(ranx_qrels.keys())
    )
    for metric in METRICS:
        np.testing.assert_allclose(ours[metric], np.asarray(theirs[metric]), atol=1e-12)
