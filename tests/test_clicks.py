"""Click-to-sample conversion, position-bias estimation and the click simulator."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopaug.augment.samples import SAMPLE_COLUMNS
from shopaug.data.records import Judgment, Query
from shopaug.feedback.store import FeedbackEvent, FeedbackStore, events_frame
from shopaug.online.clicks import (
    PositionBiasModel,
    click_samples,
    query_key,
    result_pages,
)
from shopaug.online.loop import collect_feedback
from shopaug.simulate.users import (
    ClickModel,
    ClickSimulator,
    labels_by_query,
    simulate_session,
)


def page(session: str, query: str, shown: str, clicked: dict[str, int]) -> list[dict[str, object]]:
    """Impressions of ``shown`` (one letter per product, positions 1..) plus clicks."""
    rows: list[dict[str, object]] = [
        {
            "event": "impression",
            "product_id": pid,
            "position": pos,
            "query": query,
            "session_id": session,
        }
        for pos, pid in enumerate(shown, start=1)
    ]
    rows += [
        {
            "event": "click",
            "product_id": pid,
            "position": pos,
            "query": query,
            "session_id": session,
        }
        for pid, pos in clicked.items()
    ]
    return rows


# -- position model ------------------------------------------------------------------------


def test_power_law_propensities_and_clipped_weights() -> None:
    model = PositionBiasModel.power_law(eta=1.0, max_position=20)
    assert model.propensity(1) == 1.0
    assert model.propensity(4) == pytest.approx(0.25)
    assert model.propensity(500) == pytest.approx(1 / 20)  # past the end: last value
    assert model.weight(3) == pytest.approx(3.0)
    assert model.weight(15, max_weight=10.0) == 10.0
    squared = PositionBiasModel.power_law(eta=2.0)
    assert squared.propensity(3) == pytest.approx(1 / 9)


def test_invalid_propensities_are_refused() -> None:
    with pytest.raises(ValueError, match="position 2"):
        PositionBiasModel((1.0, 0.0))
    with pytest.raises(ValueError, match="position"):
        PositionBiasModel.power_law().propensity(0)


def test_ratio_estimator_known_answer() -> None:
    pages = pd.DataFrame(
        {
            "page": ["a"] * 4,
            "query_id": ["q"] * 4,
            "query": ["q"] * 4,
            "product_id": ["x", "y", "x", "y"],
            "position": [1, 2, 1, 2],
            "clicked": [True, True, True, False],
        }
    )
    model = PositionBiasModel.estimate_ratio(pages, max_position=3)
    # CTR 2/2 at 1, 1/2 at 2, none at 3 (carried forward).
    assert model.propensities == pytest.approx((1.0, 0.5, 0.5))


def simulated_pbm_pages(seed: int, impressions: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Position-based-model clicks on randomly placed (query, product) pairs."""
    rng = np.random.default_rng(seed)
    truth = 1.0 / np.arange(1, 6)
    relevance = rng.uniform(0.05, 0.95, size=40)
    pair = rng.integers(0, 40, size=impressions)
    position = rng.integers(1, 6, size=impressions)
    clicked = rng.random(impressions) < truth[position - 1] * relevance[pair]
    frame = pd.DataFrame(
        {
            "page": np.arange(impressions).astype(str),
            "query_id": (pair // 8).astype(str),
            "query": "",
            "product_id": pair.astype(str),
            "position": position,
            "clicked": clicked,
        }
    )
    return frame, truth


def test_em_recovers_simulated_propensities() -> None:
    pages, truth = simulated_pbm_pages(seed=7, impressions=40_000)
    model = PositionBiasModel.estimate_em(pages, max_position=5)
    assert np.abs(np.asarray(model.propensities) - truth).max() < 0.05
    ratio = PositionBiasModel.estimate_ratio(pages, max_position=5)  # randomised: unbiased too
    assert np.abs(np.asarray(ratio.propensities) - truth).max() < 0.05


# -- click samples ---------------------------------------------------------------------------


def test_skip_above_negatives_and_ipw_weights() -> None:
    events = pd.DataFrame(page("s1", "blue sofa", "abcdef", {"c": 3, "e": 5}))
    samples = click_samples(events, PositionBiasModel.power_law(1.0), max_weight=4.0)
    assert list(samples.columns) == [*SAMPLE_COLUMNS, "weight"]
    rows = {(r.product_id, r.kind): (r.rank, r.weight) for r in samples.itertuples()}
    assert rows == {
        ("c", "positive"): (3, 3.0),
        ("e", "positive"): (5, 4.0),  # 1/0.2 = 5, clipped at 4
        ("a", "negative"): (1, 1.0),
        ("b", "negative"): (2, 1.0),
        ("d", "negative"): (4, 1.0),  # above the lowest click
    }  # f (below every click) is not a sample
    assert set(samples["method"]) == {"feedback"}
    assert set(samples["source"]) == {"clicks"}
    assert set(samples["query_id"]) == {query_key("blue sofa")}
    assert samples["score"].isna().all()
    assert list(samples["label"]) == [1, 1, 0, 0, 0]


def test_pages_without_clicks_give_nothing_and_pages_are_separate() -> None:
    events = pd.DataFrame(
        page("s1", "sofa", "abc", {})
        + page("s2", "sofa", "bac", {"c": 3})
        + page("s3", "sofa", "ab", {"a": 1})
    )
    samples = click_samples(events)
    by_key = {(r.product_id, r.label): (r.rank, r.weight) for r in samples.itertuples()}
    # s2: b, a negatives above c; s3: a clicked at 1. a is positive once and negative once.
    assert by_key == {
        ("c", 1): (3, 3.0),
        ("a", 1): (1, 1.0),
        ("b", 0): (1, 1.0),
        ("a", 0): (2, 1.0),
    }


def test_repeated_observations_sum_weights() -> None:
    events = pd.DataFrame(page("s1", "lamp", "ab", {"b": 2}) + page("s2", "LAMP ", "ab", {"b": 2}))
    samples = click_samples(events)
    positive = samples[samples["label"] == 1].iloc[0]
    assert positive["weight"] == pytest.approx(4.0)  # 2 + 2, same normalised query
    assert samples[samples["label"] == 0]["weight"].tolist() == [2.0]


def test_cart_counts_as_click_and_click_without_impression_is_kept() -> None:
    events = pd.DataFrame(
        [
            *page("s1", "desk", "abc", {}),
            {"event": "add_to_cart", "product_id": "b", "query": "desk", "session_id": "s1"},
            {
                "event": "click",
                "product_id": "z",
                "position": None,
                "query": "desk",
                "session_id": "s1",
            },
        ]
    )
    pages = result_pages(events)
    assert pages.set_index("product_id")["clicked"].to_dict() == {
        "a": False,
        "b": True,
        "c": False,
        "z": True,
    }
    samples = click_samples(events)
    assert samples.set_index("product_id")["label"].to_dict() == {"b": 1, "z": 1, "a": 0}


def test_no_clicks_gives_an_empty_frame_with_the_schema() -> None:
    samples = click_samples(pd.DataFrame(page("s", "q", "ab", {})))
    assert samples.empty
    assert list(samples.columns) == [*SAMPLE_COLUMNS, "weight"]


def test_click_only_log_of_issue_13_gives_positives() -> None:
    """2,568 clicks with query, product and position from concurrent clients, no impression:
    this ended in a pandas KeyError (the page table lost its bool column)."""
    rng = np.random.default_rng(13)
    queries = ["blue sofa", "oak table", "floor lamp", "velvet chair"]
    events = [
        FeedbackEvent(
            "click",
            f"p{int(rng.integers(1, 40))}",
            query=queries[int(rng.integers(len(queries)))],
            position=int(rng.integers(1, 11)),
            user_id=f"client-{int(rng.integers(3))}",
        )
        for _ in range(2568)
    ]
    frame = events_frame(events)
    samples = click_samples(frame)

    expected = {(query_key(e.query or ""), e.product_id) for e in events}
    assert set(zip(samples["query_id"], samples["product_id"], strict=True)) == expected
    assert (samples["label"] == 1).all() and (samples["kind"] == "positive").all()
    # A page is (client, session, query); a product clicked twice on one page counts once, at
    # its first click's position. Weight: the sum over pages of 1/propensity = position (<= 10).
    first_position: dict[tuple[str, str, str], int] = {}
    for e in events:
        first_position.setdefault(
            (str(e.user_id), str(e.query), e.product_id), int(e.position or 1)
        )
    by_pair: dict[tuple[str, str], list[int]] = {}
    for (_, query, product), position in first_position.items():
        by_pair.setdefault((query_key(query), product), []).append(position)
    got = samples.set_index(["query_id", "product_id"])
    for pair, positions in by_pair.items():
        assert got.loc[pair, "weight"] == pytest.approx(float(sum(positions)))
        assert got.loc[pair, "rank"] == min(positions)


# -- simulator -------------------------------------------------------------------------------


def test_simulator_first_position_rate_and_stopping() -> None:
    rng = np.random.default_rng(123)
    model = ClickModel(position_model=PositionBiasModel.power_law(1.0))
    labels = {"a": "Exact", "b": "Exact", "c": "Irrelevant"}
    sessions = [simulate_session(["a", "b", "c"], labels, rng, model) for _ in range(20_000)]
    first = np.mean([1 in s.clicked for s in sessions])
    assert first == pytest.approx(1.0 * 0.9, abs=0.015)
    # b is examined with 1/2, clicked with 0.9, but only if the user did not stop after a:
    # P(continue past 1) = 1 - 0.9 * 0.5 = 0.55.
    second = np.mean([2 in s.clicked for s in sessions])
    assert second == pytest.approx(0.55 * 0.5 * 0.9, abs=0.015)
    third = np.mean([3 in s.clicked for s in sessions])
    assert third < 0.03


def test_simulator_is_deterministic_and_shows_top_n() -> None:
    ranked = [f"p{i}" for i in range(15)]
    labels = {pid: "Partial" for pid in ranked}
    model = ClickModel(noise=0.1)
    one = [simulate_session(ranked, labels, np.random.default_rng(5), model) for _ in range(3)]
    assert one[0] == one[1] == one[2]
    assert len(one[0].shown) == 10


def test_click_model_validates_probabilities() -> None:
    with pytest.raises(ValueError, match="stop_after_click"):
        ClickModel(stop_after_click=1.5)
    with pytest.raises(ValueError, match="Exact"):
        ClickModel(click_probabilities={"Exact": -0.1})


@pytest.fixture
def service() -> Iterator[object]:
    pytest.importorskip("fastapi")
    import tempfile
    from pathlib import Path

    from fastapi.testclient import TestClient

    from shopaug.serve import Settings, create_app
    from shopaug.serve.testing import SMALL_CATALOG, load_fake_backend, write_fake_model

    with tempfile.TemporaryDirectory() as directory:
        write_fake_model(Path(directory) / "model", "v1", SMALL_CATALOG)
        app = create_app(Settings(run_dir=Path(directory)), load_fake_backend)
        with TestClient(app) as client:
            yield client


def test_run_round_drives_the_service(service: object) -> None:
    from fastapi.testclient import TestClient

    assert isinstance(service, TestClient)
    queries = [Query("q1", "blue sofa"), Query("q2", "oak table")]
    labels = labels_by_query([Judgment("q1", "p1", "Exact"), Judgment("q2", "p3", "Exact")])
    model = ClickModel(
        click_probabilities={"Exact": 1.0}, unjudged_probability=0.0, stop_after_click=1.0
    )
    events = ClickSimulator(model, seed=0).run_round(service, queries, labels)
    impressions = [e for e in events if e["event"] == "impression"]
    clicks = [e for e in events if e["event"] == "click"]
    assert len(impressions) == 12  # the fake catalog has 6 products, shown for both queries
    # Position 1 is always examined and the Exact product ranks first: one click each.
    assert [(c["query_id"], c["product_id"], c["position"]) for c in clicks] == [
        ("q1", "p1", 1),
        ("q2", "p3", 1),
    ]
    metrics = service.get("/metrics").text
    assert "shopaug_feedback_backlog 14.0" in metrics
    assert math.isclose(
        float(metrics.split('shopaug_feedback_events_total{event="click"} ')[1].split()[0]), 2.0
    )


def test_collect_feedback_reads_past_the_cursor_without_moving_it(tmp_path: Path) -> None:
    store = FeedbackStore(f"sqlite:///{tmp_path / 'f.sqlite'}")
    empty = collect_feedback(store)
    assert (empty.events, empty.last_id) == (0, None)
    assert list(empty.samples.columns) == [*SAMPLE_COLUMNS, "weight"]
    events = [
        FeedbackEvent("impression", pid, query="sofa", position=pos, session_id="s")
        for pos, pid in enumerate(["a", "b"], start=1)
    ]
    ids = store.record(
        [*events, FeedbackEvent("click", "b", query="sofa", position=2, session_id="s")]
    )
    batch = collect_feedback(store)
    assert (batch.events, batch.first_id, batch.last_id) == (3, ids.event_ids[0], ids.event_ids[-1])
    assert batch.samples.set_index("product_id")["weight"].to_dict() == {"b": 2.0, "a": 1.0}
    assert store.backlog() == 3  # consumption is the caller's decision
    store.mark_consumed(batch.last_id or 0)
    assert collect_feedback(store).events == 0
    store.close()
