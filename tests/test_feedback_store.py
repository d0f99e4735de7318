"""The feedback store on SQLite (tmp_path) and on the real PostgreSQL server."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
import sqlalchemy

from shopaug.feedback.store import (
    FeedbackEvent,
    FeedbackStore,
    IdempotencyConflict,
    events_frame,
)

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_reachable() -> str | None:
    try:
        engine = sqlalchemy.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as error:  # server down, driver missing
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {type(error).__name__}: {error}"
    return None


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeedbackStore]:
    if request.param == "sqlite":
        opened = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.sqlite'}")
        yield opened
        opened.close()
        return
    reason = _postgres_reachable()
    if reason is not None:
        pytest.skip(reason)
    opened = FeedbackStore(POSTGRES_URL, table_prefix=f"t{uuid.uuid4().hex[:12]}_")
    try:
        yield opened
    finally:
        opened.drop_tables()
        opened.close()


def click(product_id: str, **fields: object) -> FeedbackEvent:
    return FeedbackEvent("click", product_id, **fields)  # type: ignore[arg-type]


def test_record_returns_ids_in_order_and_read_new_returns_fields(store: FeedbackStore) -> None:
    ack = store.record(
        [
            FeedbackEvent("impression", "p1", query="sofa", position=1, session_id="s"),
            click("p1", query="sofa", position=1, user_id="u", timestamp=12.5),
        ]
    )
    assert ack.accepted == 2
    assert ack.event_ids[1] == ack.event_ids[0] + 1
    events = store.read_new(0)
    assert [(e.id, e.event, e.product_id) for e in events] == [
        (ack.event_ids[0], "impression", "p1"),
        (ack.event_ids[1], "click", "p1"),
    ]
    assert events[1].user_id == "u"
    assert events[1].timestamp == 12.5
    assert events[0].received_at > 0
    frame = events_frame(events)
    assert list(frame["event"]) == ["impression", "click"]


def test_idempotency_key_replays_original_acknowledgement(store: FeedbackStore) -> None:
    batch = [click("p1"), click("p2")]
    first = store.record(batch, idempotency_key="req-1")
    second = store.record(batch, idempotency_key="req-1")
    assert second.replayed is True
    assert second.event_ids == first.event_ids
    assert store.count() == 2
    with pytest.raises(IdempotencyConflict, match="req-1"):
        store.record([click("p3")], idempotency_key="req-1")
    assert store.count() == 2


def test_concurrent_retries_with_one_key_are_counted_once(store: FeedbackStore) -> None:
    batch = [click("p1", session_id="s")]
    acks = []
    errors: list[BaseException] = []

    def send() -> None:
        try:
            acks.append(store.record(batch, idempotency_key="same"))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert store.count() == 1
    assert {ack.event_ids for ack in acks} == {acks[0].event_ids}
    assert sum(not ack.replayed for ack in acks) == 1


def test_cursor_backlog_and_read_new(store: FeedbackStore) -> None:
    ids = store.record([click(f"p{i}") for i in range(5)]).event_ids
    assert store.cursor() == 0
    assert store.backlog() == 5
    assert [e.id for e in store.read_new(limit=2)] == list(ids[:2])
    assert store.mark_consumed(ids[2]) == ids[2]
    assert store.backlog() == 2
    assert [e.product_id for e in store.read_new()] == ["p3", "p4"]
    assert store.mark_consumed(ids[0]) == ids[2]  # never backwards
    assert store.backlog(consumer="other") == 5  # cursors are per consumer


def test_session_history_has_choices_not_impressions(store: FeedbackStore) -> None:
    store.record(
        [
            FeedbackEvent("impression", "p9", session_id="s"),
            click("p1", session_id="s"),
            FeedbackEvent("add_to_cart", "p2", session_id="s"),
            click("p1", session_id="s"),
            click("p7", session_id="other"),
        ]
    )
    assert store.session_history("s") == ["p2", "p1"]  # p1's latest click is after p2
    assert store.session_history("none") == []


def test_user_history_keeps_each_purchase_and_cart_in_commit_order(store: FeedbackStore) -> None:
    store.record(
        [
            FeedbackEvent("purchase", "p2", user_id="c1", timestamp=20.0),
            FeedbackEvent("impression", "p9", user_id="c1"),
            click("p8", user_id="c1"),
            FeedbackEvent("add_to_cart", "p1", user_id="c1"),
            FeedbackEvent("purchase", "p7", user_id="c2"),
        ]
    )
    store.record([FeedbackEvent("purchase", "p2", user_id="c1", timestamp=10.0)])
    # impressions and clicks are not bought; a repeat purchase is kept (its count matters);
    # the order is the store's, not the client's timestamps
    assert store.user_history("c1") == ["p2", "p1", "p2"]
    assert store.user_history("c1", limit=2) == ["p1", "p2"]  # the most recent two
    assert store.user_history("c1", events=("click",)) == ["p8"]
    assert store.user_history("c3") == []
    with pytest.raises(ValueError, match="hover"):
        store.user_history("c1", events=("hover",))


def test_an_old_table_gets_the_user_id_index_on_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:  # the events table as the first release created it
        connection.exec_driver_sql(
            "CREATE TABLE feedback_events (id INTEGER PRIMARY KEY, received_at FLOAT NOT NULL, "
            "idempotency_key VARCHAR(200), event VARCHAR(32) NOT NULL, user_id VARCHAR(200), "
            "session_id VARCHAR(200), query TEXT, query_id VARCHAR(200), "
            "product_id VARCHAR(200) NOT NULL, position INTEGER, timestamp FLOAT)"
        )
        connection.exec_driver_sql(
            "INSERT INTO feedback_events (received_at, event, user_id, product_id) "
            "VALUES (1.0, 'purchase', 'c1', 'p1')"
        )

    def indexed_columns() -> set[str]:
        indexes = sqlalchemy.inspect(engine).get_indexes("feedback_events")
        return {str(column) for index in indexes for column in index["column_names"]}

    assert "user_id" not in indexed_columns()
    store = FeedbackStore(url)
    assert "user_id" in indexed_columns()
    assert store.user_history("c1") == ["p1"]  # the old row, read through the new index
    with store.engine.connect() as connection:
        plan = connection.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT product_id FROM feedback_events WHERE user_id = 'c1'"
        ).all()
    assert "ix_feedback_events_user_id" in str(plan)
    store.close()
    FeedbackStore(url).close()  # a second open finds nothing to add
    engine.dispose()


def test_invalid_events_are_refused() -> None:
    with pytest.raises(ValueError, match="event"):
        FeedbackEvent("hover", "p1")
    with pytest.raises(ValueError, match="position"):
        FeedbackEvent("click", "p1", position=0)


def test_sqlite_uses_wal_and_full_sync(tmp_path: Path) -> None:
    store = FeedbackStore(f"sqlite:///{tmp_path / 'f.sqlite'}")
    with store.engine.connect() as connection:
        mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar_one()
        synchronous = connection.exec_driver_sql("PRAGMA synchronous").scalar_one()
    store.close()
    assert mode == "wal"
    assert synchronous == 2  # FULL


def test_bad_url_and_prefix_name_the_problem() -> None:
    with pytest.raises(ValueError, match="nosuchdb"):
        FeedbackStore("nosuchdb://x")
    with pytest.raises(ValueError, match="table_prefix"):
        FeedbackStore("sqlite://", table_prefix="x; drop")
