"""The command line: data check, eval, augment and audit on the demo data and fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from shopaug.cli import app

runner = CliRunner()


def test_data_check_prints_summary() -> None:
    result = runner.invoke(app, ["data", "check", "--data", "demo"])
    assert result.exit_code == 0, result.output
    assert "products     480" in result.output
    assert "Exact" in result.output and "(gain 2)" in result.output


def test_data_check_bad_input_exits_nonzero_with_message(generic_dir: Path) -> None:
    (generic_dir / "judgments.csv").write_text("query_id,product_id,grade\nq1,nope,1\n")
    result = runner.invoke(app, ["data", "check", "--data", str(generic_dir)])
    assert result.exit_code == 2
    assert "judgments.csv, line 2, column 'product_id': unknown product_id 'nope'" in result.output
    skipped = runner.invoke(app, ["data", "check", "--data", str(generic_dir), "--skip-bad-rows"])
    assert skipped.exit_code == 0 and "skipped rows 1" in skipped.output


def test_data_check_missing_wands_product_file(wands_dir: Path) -> None:
    (wands_dir / "wands" / "product.csv").unlink()
    result = runner.invoke(app, ["data", "check", "--data", "wands", "--data-dir", str(wands_dir)])
    assert result.exit_code == 2 and "github.com/wayfair/WANDS" in result.output


def test_eval_writes_metrics_and_trec_files(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["eval", "--data", "demo", "--retriever", "bm25", "--folds", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "demo" and metrics["retriever"] == "bm25"
    assert metrics["folds"] == 3
    for name in ("ndcg@10", "recall@100", "mrr@10", "map@100"):
        entry = metrics["metrics"][name]
        assert len(entry["per_fold"]) == 3
        lo, hi = entry["ci95"]
        assert lo <= entry["mean"] <= hi
    assert "judged_only" in metrics and "exact_only" in metrics
    run_lines = (out / "run.trec").read_text().splitlines()
    assert run_lines[0].split()[1] == "Q0" and run_lines[0].split()[3] == "1"
    assert (out / "qrels.trec").exists() and (out / "manifest.json").exists()
    folds = json.loads((out / "folds.json").read_text())
    assert len(folds["folds"]) == 3


def test_eval_scores_agree_with_ir_measures(tmp_path: Path) -> None:
    ir_measures = pytest.importorskip("ir_measures")
    out = tmp_path / "run"
    runner.invoke(
        app,
        [
            "eval",
            "--data",
            "demo",
            "--retriever",
            "dense",
            "--model",
            "hashing",
            "--folds",
            "2",
            "--out",
            str(out),
        ],
    )
    metrics = json.loads((out / "metrics.json").read_text())
    qrels = list(ir_measures.read_trec_qrels(str(out / "qrels.trec")))
    run = list(ir_measures.read_trec_run(str(out / "run.trec")))
    score = ir_measures.calc_aggregate([ir_measures.parse_measure("nDCG@10")], qrels, run)
    mean_over_queries = next(iter(score.values()))
    # folds are near-equal in size, so the fold mean is close to the query mean
    assert metrics["metrics"]["ndcg@10"]["mean"] == pytest.approx(mean_over_queries, abs=0.01)


def test_eval_refuses_a_folder_with_user_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["eval", "--data", "demo", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "did not write" in result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_augment_then_audit(tmp_path: Path) -> None:
    samples = tmp_path / "s.parquet"
    result = runner.invoke(
        app, ["augment", "--data", "demo", "--method", "bm25", "--fold", "0", "--out", str(samples)]
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(samples)
    assert {"positive", "negative"} == set(frame["kind"])
    summary = json.loads(samples.with_suffix(".summary.json").read_text())
    assert summary["fold"] == 0 and summary["counts"]["negative/bm25"] > 0
    again = runner.invoke(
        app, ["augment", "--data", "demo", "--method", "bm25", "--out", str(samples)]
    )
    assert again.exit_code == 2 and "--force" in again.output
    report_path = tmp_path / "audit.json"
    audit = runner.invoke(
        app, ["audit", str(samples), "--data", "demo", "--fold", "0", "--json", str(report_path)]
    )
    assert audit.exit_code == 0, audit.output
    report = json.loads(report_path.read_text())
    assert {"false_negative_rate", "by_method", "tail_share", "leakage"} <= set(report)
    assert report["leakage"]["rows_with_test_query_id"] == 0


@pytest.mark.parametrize("method", ["random", "popular", "near-miss", "synthetic-queries"])
def test_every_cheap_method_runs_from_the_cli(tmp_path: Path, method: str) -> None:
    out = tmp_path / f"{method}.parquet"
    config = tmp_path / "augment.yaml"
    config.write_text("mining:\n  model: hashing\nsynthetic_queries:\n  max_products: 20\n")
    result = runner.invoke(
        app,
        [
            "augment",
            "--data",
            "demo",
            "--method",
            method,
            "--fold",
            "1",
            "--config",
            str(config),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert method in set(frame["method"])


def test_augment_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("mining:\n  range_min: 50\n  range_max: 10\n")
    result = runner.invoke(
        app,
        [
            "augment",
            "--data",
            "demo",
            "--method",
            "bm25",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "s.parquet"),
        ],
    )
    assert result.exit_code == 2 and "range_max (10) must exceed range_min (50)" in result.output
    config.write_text("minning: {}\n")
    result = runner.invoke(
        app,
        [
            "augment",
            "--data",
            "demo",
            "--method",
            "bm25",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "s.parquet"),
        ],
    )
    assert result.exit_code == 2 and "unknown key(s) minning" in result.output


def _ablation_row(name: str, fold_ci: list[float | None], bootstrap: list[float] | None) -> dict:
    row: dict = {
        "name": name,
        "metrics": {"ndcg@10": {"mean": 0.846, "ci95": fold_ci}},
        "validation": {"ndcg@10": 0.5},
        "p_value_vs_plain_fine_tune": None,
        "p_value_vs_zero_shot_hybrid": 0.0123,
    }
    if bootstrap is not None:
        row["bootstrap_ci95"] = {"ndcg@10": bootstrap}
    return row


def test_run_summary_prints_the_bootstrap_interval_never_one_past_1() -> None:
    """`shopaug run quick` printed the fold t interval [0.034, 1.658] for NDCG@10 (two folds)."""
    from shopaug.experiment.search_task import summary_lines

    result = {
        "dataset": "demo",
        "trained_folds": 2,
        "folds": 5,
        "ablation": [
            _ablation_row("with bootstrap", [0.034, 1.658], [0.801, 0.889]),
            _ablation_row("folds only", [-0.2, 1.658], None),
            _ablation_row("one fold", [None, None], None),
        ],
        "selected": {"system": "with bootstrap"},
        "metrics": {"ndcg@10": {"mean": 0.846}},
    }
    lines = summary_lines(result)
    rows = {line[:36].strip(): line[36:].split() for line in lines[2:5]}
    assert rows["with bootstrap"] == ["0.500", "0.8460", "[0.801,", "0.889]", "-", "0.0123"]
    assert rows["folds only"] == ["0.500", "0.8460", "[0.000,", "1.000]*", "-", "0.0123"]
    assert rows["one fold"] == ["0.500", "0.8460", "[-,", "-]", "-", "0.0123"]
    assert "1.658" not in "\n".join(lines)
    assert lines[5].startswith("95% CI: bootstrap over test queries")
    assert lines[6] == "* no bootstrap interval: t interval over folds, clipped to [0, 1]"
    assert lines[7] == "chosen on validation queries: with bootstrap (test NDCG@10 0.8460)"
    result["ablation"] = result["ablation"][:1]
    assert not any(line.startswith("*") for line in summary_lines(result))


def test_eval_summary_clips_the_fold_interval(capsys: pytest.CaptureFixture[str]) -> None:
    from shopaug.cli import _print_metrics

    _print_metrics(
        {
            "dataset": "demo",
            "retriever": "bm25",
            "folds": 2,
            "metrics": {
                "ndcg@10": {"mean": 0.8, "ci95": [0.1, 1.5]},
                "mrr@10": {"mean": 0.5, "ci95": [None, None]},
            },
        }
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["ndcg@10", "0.8000", "95%", "CI", "[0.1000,", "1.0000]"]
    assert lines[2].split() == ["mrr@10", "0.5000", "95%", "CI", "-"]
    assert lines[3] == "95% CI: t interval over folds, clipped to [0, 1]"


@pytest.mark.parametrize(
    ("rows", "warning"),
    [
        ("", "warning: the judgments table has no rows: nothing can be trained or measured"),
        (
            "q1,a1,0\nq2,a3,0\n",
            "warning: no judgment has a positive gain (labels '0' (gain 0)): no query has a "
            "relevant product, so nothing can be trained or measured",
        ),
    ],
)
def test_data_check_warns_when_nothing_can_be_trained_or_measured(
    generic_dir: Path, rows: str, warning: str
) -> None:
    (generic_dir / "judgments.csv").write_text(f"query_id,product_id,grade\n{rows}", "utf-8")
    result = runner.invoke(app, ["data", "check", "--data", str(generic_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == warning
    as_json = runner.invoke(app, ["data", "check", "--data", str(generic_dir), "--json"])
    assert json.loads(as_json.output)["warnings"] == [warning.removeprefix("warning: ")]


def test_data_check_of_usable_data_warns_of_nothing(generic_dir: Path) -> None:
    result = runner.invoke(app, ["data", "check", "--data", str(generic_dir), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["warnings"] == []
    assert "warning" not in runner.invoke(app, ["data", "check", "--data", "demo"]).output
