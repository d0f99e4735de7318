"""One online round and the simulated loop, on the demo catalog with the hashing model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from shopaug.cli import app
from shopaug.data import kfold_queries, load_dataset, write_folds
from shopaug.errors import ConfigError
from shopaug.feedback.store import FeedbackEvent, FeedbackStore
from shopaug.models.model_dir import model_version, write_hashing_model
from shopaug.models.registry import CURRENT, resolve_model_dir
from shopaug.online import retrain
from shopaug.online.retrain import (
    ONLINE_CONSUMER,
    OnlineConfig,
    RankingModel,
    feedback_database_url,
    gate_queries,
    held_out_queries,
    mine_negatives,
    report_queries,
    run_online_round,
    training_examples,
)
from shopaug.retrieval.catalog import CatalogSource, RunCatalog
from shopaug.serve.catalog_backend import load_catalog_backend
from shopaug.simulate.users import ClickModel, simulate_session

DIM = 256


@pytest.fixture(scope="module")
def demo():
    return load_dataset("demo")


def make_run_dir(root: Path, demo) -> Path:
    run = root / "run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        "data: demo\ntext_fields: [title, category]\nseed: 0\n", encoding="utf-8"
    )
    write_hashing_model(run / "model", DIM)
    folds = kfold_queries([q.id for q in demo.queries], n_folds=3, seed=0)
    write_folds(folds, run / "folds.json", seed=0)
    return run


def feedback_queries(run: Path) -> list[str]:
    test = json.loads((run / "folds.json").read_text("utf-8"))["folds"][0]["test"]
    return sorted(test)[:8]


def log_sessions(run: Path, demo, query_ids, *, invert: bool = False, repeats: int = 3) -> int:
    """Simulated users on the served ranking, logged straight into the run's store.

    ``invert``: users who click what the judges called Irrelevant (harmful feedback)."""
    backend = load_catalog_backend(resolve_model_dir(run / CURRENT))
    labels: dict[str, dict[str, str]] = {}
    for judgment in demo.judgments:
        label = judgment.label
        if invert:
            label = {"Exact": "Irrelevant", "Irrelevant": "Exact"}.get(label, label)
        labels.setdefault(judgment.query_id, {})[judgment.product_id] = label
    model = ClickModel(unjudged_probability=0.9 if invert else 0.05)
    rng = np.random.default_rng(0)
    store = FeedbackStore(feedback_database_url(run))
    try:
        for repeat in range(repeats):
            for qid in query_ids:
                query = demo.query_by_id[qid]
                shown = [h.product_id for h in backend.search(query.text, 10, None)]
                session = simulate_session(shown, labels.get(qid, {}), rng, model)
                common = {"query": query.text, "query_id": qid, "session_id": f"s{repeat}-{qid}"}
                events = [
                    FeedbackEvent("impression", pid, position=pos, **common)
                    for pos, pid in enumerate(session.shown, start=1)
                ]
                events += [
                    FeedbackEvent("click", session.shown[pos - 1], position=pos, **common)
                    for pos in session.clicked
                ]
                store.record(events)
        return store.count()
    finally:
        store.close()


def cursor(run: Path) -> int:
    store = FeedbackStore(feedback_database_url(run))
    try:
        return store.cursor(ONLINE_CONSUMER)
    finally:
        store.close()


def test_round_promotes_within_tolerance_and_keeps_the_old_model(tmp_path: Path, demo) -> None:
    run = make_run_dir(tmp_path, demo)
    original_version = model_version(run / "model")
    original_bytes = (run / "model" / "shopaug-model.json").read_bytes()
    events = log_sessions(run, demo, feedback_queries(run))

    report = run_online_round(run, OnlineConfig(steps=5, tolerance=1.0))

    assert report.events == events and report.last_event_id == events
    assert report.positives > 0 and report.examples == report.positives
    assert report.champion_version == original_version
    assert report.challenger_version != original_version  # the fine-tune moved the weights
    assert report.promoted  # any challenger is within a tolerance of 1.0 NDCG
    assert report.mean_delta == pytest.approx(report.challenger_ndcg - report.champion_ndcg)
    current = resolve_model_dir(run / CURRENT)
    assert current.parent == (run / "models").resolve() and current.name.startswith("v0001-")
    assert model_version(current) == report.challenger_version
    # the trained model and the challenger directory are untouched, nothing is deleted
    assert (run / "model" / "shopaug-model.json").read_bytes() == original_bytes
    assert model_version(run / "model") == original_version
    assert Path(report.challenger_dir).is_dir()
    assert cursor(run) == events
    saved = json.loads((run / "online" / "round-0001" / "round.json").read_text("utf-8"))
    assert saved["promoted"] is True and saved["challenger_version"] == report.challenger_version
    # the held-out queries are test-fold queries that were never in the feedback log
    assert set(report.held_out_queries).isdisjoint(feedback_queries(run))
    test_fold = set(json.loads((run / "folds.json").read_text("utf-8"))["folds"][0]["test"])
    assert set(report.held_out_queries) <= test_fold


def test_round_rejects_a_challenger_trained_on_harmful_clicks(tmp_path: Path, demo) -> None:
    run = make_run_dir(tmp_path, demo)
    events = log_sessions(run, demo, feedback_queries(run), invert=True, repeats=4)

    report = run_online_round(run, OnlineConfig(steps=30, lr=0.02, tolerance=0.0))

    assert report.challenger_ndcg < report.champion_ndcg
    assert not report.promoted and "keep the champion" in report.reason
    assert not (run / CURRENT).exists() and not (run / "models").exists()
    assert resolve_model_dir(run / CURRENT) == (run / "model").resolve()
    assert cursor(run) == events  # consumed either way: the same clicks are not replayed


def test_round_without_clicks_trains_nothing_and_consumes(tmp_path: Path, demo) -> None:
    run = make_run_dir(tmp_path, demo)
    store = FeedbackStore(feedback_database_url(run))
    store.record([FeedbackEvent("impression", "p0001", query="sofa", position=1)])
    store.close()

    report = run_online_round(run, OnlineConfig(steps=2))

    assert report.examples == 0 and report.challenger_dir is None and not report.promoted
    assert "no clicks" in report.reason
    assert cursor(run) == 1
    again = run_online_round(run, OnlineConfig(steps=2))
    assert again.events == 0 and again.round == 2


def test_held_out_queries_leave_out_logged_ids_and_texts(tmp_path: Path, demo) -> None:
    run = make_run_dir(tmp_path, demo)
    test = sorted(json.loads((run / "folds.json").read_text("utf-8"))["folds"][0]["test"])
    by_id, by_text = test[0], test[1]
    from shopaug.online.clicks import query_key

    logged = {by_id, query_key("  " + demo.query_by_id[by_text].text.upper())}
    held = held_out_queries(run, demo, logged)
    assert by_id not in held and by_text not in held
    assert set(held) == {q for q in test if q not in (by_id, by_text) and demo.positives([q])[q]}
    with pytest.raises(ConfigError, match="no held-out query"):
        held_out_queries(run, demo, set(test))


def test_training_groups_carry_ipw_weights_and_never_a_clicked_negative() -> None:
    samples = pd.DataFrame(
        {
            "query_id": ["q1", "q1", "q1", "q1"],
            "query": ["sofa"] * 4,
            "product_id": ["a", "b", "c", "a"],
            "label": [1, 1, 0, 0],  # "a" was clicked on one page and skipped on another
            "weight": [1.0, 3.0, 1.0, 1.0],
        }
    )
    texts = {pid: f"text {pid}" for pid in "abcde"}
    examples = training_examples(
        samples, {"q1": ["d", "b"]}, texts, OnlineConfig(negatives_per_example=5)
    )
    assert [(e.positive, e.weight) for e in examples] == [("text a", 1.0), ("text b", 3.0)]
    for example in examples:
        assert sorted(example.negatives) == ["text c", "text d"]


def test_mined_negatives_skip_the_shown_page_and_the_clicks(tmp_path: Path, demo) -> None:
    run = make_run_dir(tmp_path, demo)
    source = CatalogSource.from_run_dir(run)
    catalog = RunCatalog.from_dataset(demo, source.text_fields)
    champion = RankingModel.load(run / "model", catalog, tmp_path / "cache")
    hits = champion.rank({"q": "floor lamp"}, 60)["q"]
    ranking = [pid for pid, _ in hits]
    samples = pd.DataFrame(
        {
            "query_id": ["q"],
            "query": ["floor lamp"],
            "product_id": [ranking[12]],
            "label": [1],
            "weight": [1.0],
        }
    )
    config = OnlineConfig(mined_negatives_per_query=40, mining_margin=0.0)
    mined = mine_negatives(samples, champion, catalog, config)["q"]
    # ranks 11..50 counted without the click (augment.mining's window), never the click;
    # margin 0 disables the false-negative filter
    window = [pid for pid in ranking if pid != ranking[12]][10:50]
    assert sorted(mined) == sorted(window) and ranking[12] not in mined
    assert ranking[9] not in mined  # the shown page is never mined
    below = OnlineConfig(mined_negatives_per_query=40, mining_margin=0.01)
    click_score = hits[12][1]
    kept = mine_negatives(samples, champion, catalog, below)["q"]
    score_of = dict(hits)
    assert kept and all(score_of[p] < click_score * 0.99 for p in kept)
    strict = mine_negatives(samples, champion, catalog, OnlineConfig(mining_margin=0.5))
    assert strict == {}  # nothing in ranks 11-50 scores half below the click


def test_gate_and_report_queries_are_disjoint_halves() -> None:
    held = [f"q{i:03d}" for i in range(200)]
    gate, reported = gate_queries(held), report_queries(held)
    assert set(gate).isdisjoint(reported) and sorted(gate + reported) == held
    assert 60 < len(gate) < 140  # about half
    # stable as the log grows: a query keeps its side whatever else is held out
    assert gate_queries(held[::3]) == [q for q in held[::3] if q in set(gate)]
    with pytest.raises(ConfigError, match="gate query"):
        gate_queries(reported[:5])


def test_round_gates_on_gate_queries_only(tmp_path: Path, demo, monkeypatch) -> None:
    run = make_run_dir(tmp_path, demo)
    log_sessions(run, demo, feedback_queries(run), repeats=1)
    scored: list[list[str]] = []
    original = retrain.per_query_ndcg

    def spy(model, dataset, query_ids):
        scored.append(list(query_ids))
        return original(model, dataset, query_ids)

    monkeypatch.setattr(retrain, "per_query_ndcg", spy)
    report = run_online_round(run, OnlineConfig(steps=2, tolerance=1.0))
    held = held_out_queries(run, demo, set())
    assert len(scored) == 2 and scored[0] == scored[1] == report.held_out_queries
    assert set(report.held_out_queries) <= set(gate_queries(held))
    assert set(report.held_out_queries).isdisjoint(report_queries(held))


def test_simulate_command_runs_three_rounds_and_writes_the_report(tmp_path: Path, demo) -> None:
    run = make_run_dir(tmp_path, demo)
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            str(run),
            "--rounds",
            "3",
            "--queries-per-round",
            "6",
            "--steps",
            "3",
            "--tolerance",
            "1.0",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads((run / "simulation.json").read_text("utf-8"))
    assert len(payload["ndcg_at_10"]) == 3 and len(payload["rounds"]) == 3
    assert all(0.0 <= value <= 1.0 for value in payload["ndcg_at_10"])
    assert set(payload["feedback_queries"]).isdisjoint(payload["held_out_queries"])
    # the served NDCG is reported on queries the gate never reads
    assert payload["held_out_queries"] and set(payload["held_out_queries"]).isdisjoint(
        gate_queries(payload["held_out_queries"] + payload["gate_queries"])
    )
    decisions = payload["decisions"]
    assert len(decisions) == 3 and set(decisions) <= {"promote", "keep", "no-training"}
    promotions = (run / "promotions.jsonl").read_text("utf-8").splitlines()
    assert len(promotions) == decisions.count("promote") >= 1
    # after a promotion the service answered with the promoted model (hot reload)
    assert payload["rounds"][-1]["served_version"] == model_version(
        resolve_model_dir(run / CURRENT)
    )
    assert "round 3:" in result.output and "simulation.json" in result.output


@pytest.mark.slow
def test_online_round_fine_tunes_minilm(tmp_path: Path, demo) -> None:
    import shutil

    from shopaug.encoders.dense import minilm_path

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: demo\ntext_fields: [title, category]\n", "utf-8")
    shutil.copytree(minilm_path(), run / "model")
    write_folds(
        kfold_queries([q.id for q in demo.queries], n_folds=3, seed=0), run / "folds.json", seed=0
    )
    log_sessions(run, demo, feedback_queries(run)[:4], repeats=1)
    report = run_online_round(run, OnlineConfig(steps=2, batch_size=4, tolerance=1.0))
    assert report.promoted and report.challenger_version != report.champion_version
    assert report.challenger_version.startswith("st@")
    assert (Path(report.challenger_dir) / "model.safetensors").is_file()


def test_a_fusing_champion_is_gated_on_its_fused_ranking(tmp_path: Path, demo) -> None:
    """With ``fusion.json`` the gate ranks as the service does: dense fused with BM25."""
    from shopaug.retrieval.fusion import bm25_run, rrf_fuse
    from shopaug.retrieval.retrievers import BM25Retriever

    run = make_run_dir(tmp_path, demo)
    source = CatalogSource.from_run_dir(run)
    catalog = RunCatalog.from_dataset(demo, source.text_fields)
    dense_only = RankingModel.load(run / "model", catalog, tmp_path / "cache")
    assert dense_only.fusion is None and dense_only.bm25 is None
    (run / "model" / "fusion.json").write_text('{"method": "rrf", "depth": 50}', "utf-8")
    fused = RankingModel.load(run / "model", catalog, tmp_path / "cache")
    assert fused.fusion is not None and fused.bm25 is not None
    queries = {"q1": "floor lamp", "q2": "blue velvet sofa"}
    lexical = bm25_run(BM25Retriever(catalog.texts), catalog.product_ids, queries, depth=50)
    expected = rrf_fuse([dense_only.rank(queries, 50), lexical], depth=10)
    assert fused.rank(queries, 10) == expected
    assert fused.rank(queries, 10) != dense_only.rank(queries, 10)
    # a lexical-only match of BM25 reaches the fused top 10
    assert all(lexical[q] for q in queries)


def test_a_round_keeps_every_stage_and_the_gate_scores_as_the_service(tmp_path: Path, demo) -> None:
    """A served pipeline with BM25 fusion and a LambdaMART reranker goes through a round: the
    challenger carries both stages (the reranker with the champion's encoder for its features,
    since the first stage changed), the promoted model still reranks in the service, and the
    gate's champion score equals the score of the service's own ranking on the same queries."""
    from pipelines import write_reranker
    from shopaug.eval.metrics import evaluate_run
    from shopaug.retrieval.reranking import FEATURES_ENCODER_DIR, RERANKER_DIR

    run = make_run_dir(tmp_path, demo)
    (run / "model" / "fusion.json").write_text('{"method": "convex", "weight": 0.5}', "utf-8")
    write_reranker(run / "model" / RERANKER_DIR, top_k=20)
    served = load_catalog_backend(run / "model")
    assert "reranked" in served.ranking and "bm25" in served.ranking

    source = CatalogSource.from_run_dir(run)
    catalog = RunCatalog.from_dataset(demo, source.text_fields)
    champion = RankingModel.load(run / "model", catalog, tmp_path / "cache")
    assert champion.reranker is not None and champion.fusion is not None
    test = json.loads((run / "folds.json").read_text("utf-8"))["folds"][0]["test"]
    queries = {q: demo.query_by_id[q].text for q in sorted(test)[:12]}
    gate_run = champion.rank(queries, 10)
    service_run = {
        q: [(h.product_id, h.score) for h in served.search(text, 10, None)]
        for q, text in queries.items()
    }
    assert {q: [p for p, _ in r] for q, r in gate_run.items()} == {
        q: [p for p, _ in r] for q, r in service_run.items()
    }
    qrels = demo.qrels(query_ids=list(queries))
    gate_ndcg = retrain.per_query_ndcg(champion, demo, list(queries))
    service_ndcg = evaluate_run(service_run, qrels, metrics=["ndcg@10"], query_ids=list(queries))[
        "ndcg@10"
    ]
    np.testing.assert_allclose(gate_ndcg, service_ndcg)

    log_sessions(run, demo, feedback_queries(run))
    report = run_online_round(run, OnlineConfig(steps=5, tolerance=1.0))
    assert report.promoted
    challenger = Path(report.challenger_dir)
    assert (challenger / "fusion.json").is_file()
    assert (challenger / RERANKER_DIR / "reranker.json").is_file()
    assert (challenger / RERANKER_DIR / FEATURES_ENCODER_DIR / "shopaug-model.json").is_file()
    promoted = load_catalog_backend(resolve_model_dir(run / CURRENT))
    assert "reranked" in promoted.ranking and "bm25" in promoted.ranking
    assert promoted.reranker is not None and promoted.reranker.query_encoder is not None
    assert len(promoted.search("sofa", 5)) == 5
