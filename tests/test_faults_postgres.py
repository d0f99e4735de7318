"""Faults of a PostgreSQL feedback store, on a throwaway cluster this module starts itself
(``initdb`` + ``pg_ctl`` on a temporary folder and a free port; never the shared server).

As root (initdb refuses root) the cluster runs as an unprivileged user through ``runuser``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("psycopg")
import sqlalchemy
from fastapi.testclient import TestClient

from fault_injection import (
    FeedbackSender,
    PostgresCluster,
    cluster_unavailable_reason,
    lost_events,
    record_figures,
    stored_by_key,
    wait_until,
)
from shopaug.feedback.store import (
    FeedbackEvent,
    FeedbackStore,
    StoreUnavailable,
)
from shopaug.serve import Settings, create_app
from shopaug.serve.testing import SMALL_CATALOG, load_fake_backend, write_fake_model


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    reason = cluster_unavailable_reason()
    if reason is not None:
        pytest.skip(f"no throwaway PostgreSQL cluster: {reason}")
    started = PostgresCluster()
    try:
        started.init()
        started.start()
        # The server default says commits need not wait for the WAL flush; the store must
        # not inherit that.
        started.execute("ALTER DATABASE postgres SET synchronous_commit = off")
        started.execute("ALTER ROLE postgres SET synchronous_commit = off")
        yield started
    finally:
        started.destroy()


def test_store_sessions_commit_synchronously(cluster: PostgresCluster) -> None:
    engine = sqlalchemy.create_engine(cluster.url)
    with engine.connect() as connection:  # a plain session gets the server's setting
        assert connection.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "off"
    engine.dispose()
    store = FeedbackStore(cluster.url, table_prefix="sync_")
    try:
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"
        store.record([FeedbackEvent("click", "p1")])  # after a commit and a pool return too
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"
    finally:
        store.drop_tables()
        store.close()


def test_lock_held_past_the_timeout_is_unavailable(cluster: PostgresCluster) -> None:
    """A slow store: another session holds the writers' lock past ``timeout_s``."""
    store = FeedbackStore(cluster.url, table_prefix="slow_", timeout_s=0.5)
    blocker = sqlalchemy.create_engine(cluster.url, isolation_level="AUTOCOMMIT")
    try:
        with blocker.connect() as connection:
            key = {"key": store._lock_key}
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), key)
            with pytest.raises(StoreUnavailable, match=r"statement timeout|lock timeout"):
                store.record([FeedbackEvent("click", "p1")], idempotency_key="slow-1")
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), key)
        acknowledgement = store.record([FeedbackEvent("click", "p1")], idempotency_key="slow-1")
        assert acknowledgement.replayed is False  # the timed-out attempt wrote nothing
        assert store.count() == 1
    finally:
        blocker.dispose()
        store.drop_tables()
        store.close()


def test_server_stopped_mid_stream(cluster: PostgresCluster, tmp_path: Path) -> None:
    write_fake_model(tmp_path / "model", "v1", SMALL_CATALOG)
    settings = Settings(run_dir=tmp_path, database_url=cluster.url, table_prefix="stop_")
    app = create_app(settings, load_fake_backend)
    with TestClient(app) as client, FeedbackSender(client.post) as sender:
        wait_until(lambda: sender.acknowledged_count() >= 5, "5 acknowledged events")
        cluster.stop("fast")  # ends every session, then the server
        try:
            start = sender.status_count(503)
            wait_until(lambda: sender.status_count(503) >= start + 2, "two 503 answers")
            acknowledged = sender.acknowledged_count()
            wait_until(lambda: sender.status_count(503) >= start + 4, "four 503 answers")
            assert sender.acknowledged_count() == acknowledged  # nothing while it is down
            search = client.get("/search", params={"q": "oak table", "k": 1})
            assert search.status_code == 200
            assert client.get("/readyz").status_code == 503
        finally:
            cluster.start()
        more = sender.acknowledged_count() + 5
        wait_until(lambda: sender.acknowledged_count() >= more, "recovery after the restart")
        assert client.get("/readyz").status_code == 200
    tally = sender.tally
    store = FeedbackStore(cluster.url, table_prefix="stop_")
    try:
        lost = lost_events(tally, store)
        assert lost == []
        assert all(len(ids) == 1 for ids in stored_by_key(store).values())
    finally:
        store.drop_tables()
        store.close()
    assert tally.other_5xx == 0, tally.statuses
    assert tally.retry_after_missing == 0
    assert "nothing was written" in tally.bodies[503]
    record_figures("PostgreSQL server stopped and restarted", tally, len(lost))
