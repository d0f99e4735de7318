"""Every feedback log ``/feedback`` accepts goes through the online loop without a traceback.

Hypothesis writes logs in the shapes the API allows (clicks without impressions, impressions
without clicks, events with no query, one event per session, the same position twice, carts
and purchases, missing positions); :func:`feedback_samples` turns each into samples or counts
why an event gave none. One log of every shape also goes through ``shopaug online`` itself.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from shopaug.augment.samples import SAMPLE_COLUMNS
from shopaug.cli import app
from shopaug.data import kfold_queries, load_dataset, write_folds
from shopaug.feedback.store import EVENT_COLUMNS, FeedbackEvent, FeedbackStore, events_frame
from shopaug.models.model_dir import write_hashing_model
from shopaug.online.clicks import (
    CLICK_EVENTS,
    SKIP_REASONS,
    click_samples,
    feedback_samples,
    query_key,
)
from shopaug.online.loop import collect_feedback
from shopaug.online.retrain import feedback_database_url

PRODUCTS = ["p1", "p2", "p3", "p4", "p5"]
QUERIES = ["sofa", "Blue  Sofa", "oak table", "   "]

optional_text = st.one_of(st.none(), st.just(""), st.sampled_from(QUERIES))
optional_id = st.one_of(st.none(), st.just(""), st.sampled_from(["a", "b", "c"]))


@st.composite
def api_events(draw: st.DrawFn) -> FeedbackEvent:
    """One event as ``POST /feedback`` accepts it (any optional field may be missing)."""
    return FeedbackEvent(
        event=draw(st.sampled_from(["impression", *CLICK_EVENTS])),
        product_id=draw(st.sampled_from(PRODUCTS)),
        query=draw(optional_text),
        query_id=draw(st.one_of(st.none(), st.just(""), st.sampled_from(["q1", "q2"]))),
        position=draw(st.one_of(st.none(), st.integers(1, 12), st.just(100_000))),
        user_id=draw(optional_id),
        session_id=draw(optional_id),
        timestamp=draw(st.one_of(st.none(), st.floats(0, 2e9))),
    )


logs = st.lists(api_events(), max_size=40)


def has_query(event: FeedbackEvent, log: list[FeedbackEvent]) -> bool:
    """Text of its own, or text another event logged under the same query id."""
    if event.query and event.query.strip():
        return True
    return bool(event.query_id) and any(
        other.query_id == event.query_id and other.query and other.query.strip() for other in log
    )


@settings(max_examples=120, deadline=None, derandomize=True)
@given(log=logs)
def test_every_accepted_log_gives_samples_or_counted_skips(log: list[FeedbackEvent]) -> None:
    result = feedback_samples(events_frame(log))
    samples = result.samples

    assert list(samples.columns) == [*SAMPLE_COLUMNS, "weight"]
    assert set(result.skipped) <= set(SKIP_REASONS)
    assert all(count > 0 for count in result.skipped.values())
    assert result.total_skipped <= len(log)
    assert set(samples["label"]) <= {0, 1}
    assert (samples["weight"] >= 1.0).all()
    assert (samples["query"].str.strip() != "").all()
    # A positive is exactly a product clicked (or carted, bought) under a query.
    clicked = {e.product_id for e in log if e.event in CLICK_EVENTS and has_query(e, log)}
    positives = samples[samples["label"] == 1]
    assert set(positives["product_id"]) == clicked
    # A negative was shown with a position (skip-above needs one).
    shown = {
        e.product_id
        for e in log
        if e.event == "impression" and e.position is not None and has_query(e, log)
    }
    assert set(samples.loc[samples["label"] == 0, "product_id"]) <= shown
    # Events with no query text at all are counted, never trained on.
    without_query = sum(
        1 for e in log if not has_query(e, log) and e.event in ("impression", *CLICK_EVENTS)
    )
    assert result.skipped.get("no_query", 0) == without_query


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    log=st.lists(api_events().filter(lambda e: e.event in CLICK_EVENTS), min_size=1, max_size=30)
)
def test_clicks_without_impressions_are_positives_at_their_own_position(
    log: list[FeedbackEvent],
) -> None:
    samples = click_samples(events_frame(log))

    assert (samples["label"] == 1).all()  # nothing was shown, so nothing was skipped above
    expected = {
        (e.query_id or query_key(e.query or ""), e.product_id)
        for e in log
        if e.query and e.query.strip()
    }
    got = set(zip(samples["query_id"], samples["product_id"], strict=True))
    assert expected <= got


@pytest.mark.parametrize(
    ("log", "skipped", "positives"),
    [
        # impressions without clicks: nothing, counted
        (
            [
                FeedbackEvent("impression", p, query="sofa", position=i)
                for i, p in enumerate(PRODUCTS, 1)
            ],
            {"page_without_click": 5},
            0,
        ),
        # events with no query: counted
        (
            [FeedbackEvent("click", "p1"), FeedbackEvent("impression", "p2", position=1)],
            {"no_query": 2},
            0,
        ),
        # one event per session, all clicks on the same query: one positive per product
        (
            [
                FeedbackEvent("click", "p1", query="sofa", position=3, session_id=f"s{i}")
                for i in range(4)
            ],
            {},
            1,
        ),
        # the same position twice on one page, the click below both
        (
            [
                FeedbackEvent("impression", "p1", query="sofa", position=1),
                FeedbackEvent("impression", "p2", query="sofa", position=1),
                FeedbackEvent("impression", "p3", query="sofa", position=2),
                FeedbackEvent("click", "p3", query="sofa", position=2),
            ],
            {},
            1,
        ),
        # an impression without a position: counted; its click stays, at position 1
        (
            [
                FeedbackEvent("impression", "p1", query="sofa"),
                FeedbackEvent("click", "p1", query="sofa"),
            ],
            {"unplaced_impression": 1},
            1,
        ),
    ],
)
def test_log_shapes_known_answers(
    log: list[FeedbackEvent], skipped: dict[str, int], positives: int
) -> None:
    result = feedback_samples(events_frame(log))

    assert result.skipped == skipped
    assert int((result.samples["label"] == 1).sum()) == positives


def test_duplicated_position_gives_both_skipped_products_as_negatives() -> None:
    log = [
        FeedbackEvent("impression", "p1", query="sofa", position=1),
        FeedbackEvent("impression", "p2", query="sofa", position=1),
        FeedbackEvent("impression", "p3", query="sofa", position=2),
        FeedbackEvent("click", "p3", query="sofa", position=2),
    ]
    samples = click_samples(events_frame(log))

    assert samples[["product_id", "label", "rank"]].values.tolist() == [
        ["p3", 1, 2],
        ["p1", 0, 1],
        ["p2", 0, 1],
    ]
    assert samples["weight"].tolist() == pytest.approx([2.0, 1.0, 1.0])


def test_query_text_is_taken_from_another_event_with_the_same_query_id() -> None:
    log = [
        FeedbackEvent("impression", "p1", query="sofa", query_id="q1", position=1),
        FeedbackEvent("click", "p2", query_id="q1", position=2),  # no text of its own
    ]
    samples = click_samples(events_frame(log))

    assert samples[["query_id", "query", "product_id", "label"]].values.tolist() == [
        ["q1", "sofa", "p2", 1],
        ["q1", "sofa", "p1", 0],
    ]


def test_frames_from_other_sources_with_bad_values_are_counted() -> None:
    frame = pd.DataFrame(
        {
            "event": ["click", "view", "click", None],
            "product_id": ["p1", "p1", None, "p2"],
            "position": [0, 1, 1, "x"],
            "query": ["sofa", "sofa", "sofa", "sofa"],
        }
    )
    result = feedback_samples(frame)

    assert result.samples.empty
    assert result.skipped == {"bad_position": 1, "unknown_event": 2, "no_product": 1}


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(log=st.lists(api_events(), min_size=1, max_size=25))
def test_logs_stored_by_the_service_go_through_collect_feedback(
    log: list[FeedbackEvent], tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("store")
    store = FeedbackStore(f"sqlite:///{(folder / 'feedback.sqlite').as_posix()}")
    try:
        store.record(log)
        batch = collect_feedback(store)
    finally:
        store.close()

    assert batch.events == len(log)
    assert list(batch.samples.columns) == [*SAMPLE_COLUMNS, "weight"]


# -- through `shopaug online` --------------------------------------------------------------


def make_run_dir(root: Path) -> Path:
    """A run on the demo catalog with the hashing model (as tests/test_online_loop.py)."""
    demo = load_dataset("demo")
    run = root / "run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        "data: demo\ntext_fields: [title, category]\nseed: 0\n", encoding="utf-8"
    )
    write_hashing_model(run / "model", 256)
    folds = kfold_queries([q.id for q in demo.queries], n_folds=3, seed=0)
    write_folds(folds, run / "folds.json", seed=0)
    return run


@pytest.mark.parametrize(
    "shape",
    # "mixed" holds every shape at once; "clicks_only" is the log of issue 13.
    ["clicks_only", "mixed"],
)
def test_shopaug_online_takes_every_log_shape(tmp_path: Path, shape: str) -> None:
    run = make_run_dir(tmp_path)
    demo = load_dataset("demo")
    products = [p.id for p in demo.products[:6]]
    texts = ["velvet sofa", "oak table"]  # not the demo's queries, so held-out ones remain
    events = {
        "clicks_only": [
            FeedbackEvent("click", p, query=texts[i % 2], position=i + 1)
            for i, p in enumerate(products)
        ],
        "impressions_only": [
            FeedbackEvent("impression", p, query=texts[0], position=i + 1)
            for i, p in enumerate(products)
        ],
        "no_query": [FeedbackEvent("click", p) for p in products],
        "one_event_per_session": [
            FeedbackEvent("purchase", p, query=texts[0], session_id=f"s{i}")
            for i, p in enumerate(products)
        ],
    }
    events["mixed"] = [event for shaped in events.values() for event in shaped] + [
        FeedbackEvent("impression", products[0], query=texts[1], position=1),
        FeedbackEvent("impression", products[1], query=texts[1], position=1),
    ]
    store = FeedbackStore(feedback_database_url(run))
    store.record(events[shape])
    store.close()

    result = CliRunner().invoke(app, ["online", str(run), "--steps", "2", "--tolerance", "1.0"])

    assert result.exit_code == 0, result.output
    assert result.exception is None
    report = sorted((run / "online").glob("round-*/round.json"))
    assert len(report) == 1
    trained = shape in ("clicks_only", "one_event_per_session", "mixed")
    assert ("no clicks" in result.output) is not trained, result.output


def test_event_columns_are_what_the_loop_reads() -> None:
    """The store's frame has every column feedback_samples reads (else the loop would fail)."""
    assert {"event", "product_id", "position", "query", "query_id", "user_id", "session_id"} <= set(
        EVENT_COLUMNS
    )
