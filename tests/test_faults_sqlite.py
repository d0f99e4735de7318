"""Faults of a SQLite feedback store while a client keeps sending feedback.

The promise each test checks: ``/feedback`` answers 503 (507 for a full disk) with
``Retry-After``, acknowledges nothing it did not commit, never answers another 5xx, and
recovers by itself when the store is back; ``/search`` keeps answering meanwhile.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fault_injection import (
    FeedbackSender,
    SenderTally,
    SqliteFault,
    integrity,
    lost_events,
    record_figures,
    stored_by_key,
    wait_until,
)
from shopaug.feedback.store import FeedbackStore
from shopaug.serve import Settings, create_app
from shopaug.serve.testing import SMALL_CATALOG, load_fake_backend, write_fake_model


def make_app(run_dir: Path, database: Path, **settings: object) -> FastAPI:
    write_fake_model(run_dir / "model", "v1", SMALL_CATALOG)
    url = f"sqlite:///{database}"
    return create_app(Settings(run_dir=run_dir, database_url=url, **settings), load_fake_backend)


def assert_promise(tally: SenderTally, database: Path, *, refused: int = 3) -> None:
    """Every acknowledged event is stored once, refusals carried Retry-After, no other 5xx."""
    assert tally.other_5xx == 0, tally.statuses
    assert tally.retry_after_missing == 0
    assert tally.refused >= refused, tally.statuses
    store = FeedbackStore(f"sqlite:///{database}", create=False)
    try:
        assert lost_events(tally, store) == []
        assert all(len(ids) == 1 for ids in stored_by_key(store).values())  # never twice
    finally:
        store.close()
    assert integrity(f"sqlite:///{database}") == "ok"


def wait_refusals(sender: FeedbackSender, count: int, status: int = 503) -> None:
    """Wait for ``count`` more refusals, then check that no event was acknowledged meanwhile."""
    start = sender.status_count(status)
    wait_until(lambda: sender.status_count(status) >= start + 2, f"two {status} answers")
    acknowledged = sender.acknowledged_count()  # the sender is sequential: no write in flight
    wait_until(lambda: sender.status_count(status) >= start + count, f"{count} {status} answers")
    assert sender.acknowledged_count() == acknowledged, "acknowledged while the store was down"


def wait_acknowledged(sender: FeedbackSender, more: int) -> None:
    target = sender.acknowledged_count() + more
    wait_until(lambda: sender.acknowledged_count() >= target, f"{more} more acknowledged events")


def test_read_only_database_answers_503_and_recovers(tmp_path: Path) -> None:
    database = tmp_path / "db" / "feedback.sqlite"
    database.parent.mkdir()
    app = make_app(tmp_path / "run", database)
    with TestClient(app) as client, FeedbackSender(client.post) as sender:
        wait_acknowledged(sender, 5)
        fault = SqliteFault(
            app.state.runtime.store, "PRAGMA query_only=ON", "PRAGMA query_only=OFF"
        )
        with fault.injected():
            wait_refusals(sender, 4)
            search = client.get("/search", params={"q": "blue sofa", "k": 2})
            assert search.status_code == 200
            assert [hit["product_id"] for hit in search.json()["results"]] == ["p1", "p2"]
        wait_acknowledged(sender, 5)
    assert "readonly" in sender.tally.bodies[503]
    assert_promise(sender.tally, database)
    record_figures("SQLite read-only (SQLITE_READONLY)", sender.tally, 0)


def test_database_folder_moved_away_and_back(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    database = folder / "feedback.sqlite"
    app = make_app(tmp_path / "run", database)
    with TestClient(app) as client, FeedbackSender(client.post) as sender:
        wait_acknowledged(sender, 5)
        os.rename(folder, tmp_path / "db-away")  # an unmounted volume, a moved folder
        try:
            wait_refusals(sender, 4)
            assert client.get("/search", params={"q": "sofa"}).status_code == 200
        finally:
            os.rename(tmp_path / "db-away", folder)
        wait_acknowledged(sender, 5)
    assert_promise(sender.tally, database)
    record_figures("SQLite folder moved away and back", sender.tally, 0)


def test_deleted_database_is_never_acknowledged_into(tmp_path: Path) -> None:
    """SQLite in WAL mode keeps committing to a deleted file through its open handle; the
    store must notice, or it would acknowledge events nobody can read again."""
    folder = tmp_path / "db"
    folder.mkdir()
    app = make_app(tmp_path / "run", folder / "feedback.sqlite")
    with TestClient(app) as client, FeedbackSender(client.post) as sender:
        wait_acknowledged(sender, 5)
        before = sender.acknowledged_count()
        shutil.rmtree(folder)
        wait_refusals(sender, 1)
        # the one request in flight when the folder went may have committed before it went
        settled = sender.acknowledged_count()
        assert settled <= before + 1
        wait_refusals(sender, 3)
        folder.mkdir()  # the folder comes back empty: the data is gone, still nothing acked
        wait_refusals(sender, 3)
        assert sender.acknowledged_count() == settled
    assert sender.tally.other_5xx == 0
    assert sender.tally.retry_after_missing == 0
    record_figures("SQLite folder deleted (data gone)", sender.tally, 0)


def test_full_database_answers_507_without_corruption(tmp_path: Path) -> None:
    database = tmp_path / "feedback.sqlite"
    app = make_app(tmp_path / "run", database)
    with TestClient(app) as client, FeedbackSender(client.post) as sender:
        wait_acknowledged(sender, 5)
        store = app.state.runtime.store
        # max_page_count is clamped to the current size: the file may not grow any more.
        fault = SqliteFault(store, "PRAGMA max_page_count=1", "PRAGMA max_page_count=4294967294")
        with fault.injected():
            wait_refusals(sender, 4, status=507)
            assert client.get("/search", params={"q": "lamp"}).status_code == 200
        wait_acknowledged(sender, 5)
    assert "full" in sender.tally.bodies[507]
    assert_promise(sender.tally, database)
    record_figures("SQLite full (SQLITE_FULL, max_page_count)", sender.tally, 0)


@contextmanager
def small_filesystem(folder: Path, size: str) -> Iterator[Path]:
    """A size-limited tmpfs at ``folder`` (needs root with CAP_SYS_ADMIN), else a skip."""
    folder.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or error
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root): {detail}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_disk_full_on_a_small_filesystem(tmp_path: Path) -> None:
    """A real ENOSPC: the database on a 640 KiB tmpfs, a ballast file freed afterwards."""
    with small_filesystem(tmp_path / "small", "640k") as folder:
        ballast = folder / "ballast"
        ballast.write_bytes(b"\0" * 256 * 1024)
        database = folder / "feedback.sqlite"
        app = make_app(tmp_path / "run", database)
        with TestClient(app) as client, FeedbackSender(client.post) as sender:
            wait_refusals(sender, 4, status=507)  # the disk fills up while events arrive
            assert client.get("/search", params={"q": "oak table"}).status_code == 200
            ballast.unlink()
            wait_acknowledged(sender, 5)
        assert "full" in sender.tally.bodies[507]
        assert_promise(sender.tally, database)
        record_figures("disk full (ENOSPC on a 640 KiB tmpfs)", sender.tally, 0)


def test_locked_database_times_out_with_503(tmp_path: Path) -> None:
    """A slow store: another writer holds the lock past feedback_store_timeout_s."""
    database = tmp_path / "feedback.sqlite"
    app = make_app(tmp_path / "run", database, feedback_store_timeout_s=0.3)
    body = {"event": "click", "product_id": "p2"}
    headers = {"Idempotency-Key": "slow-1"}
    with TestClient(app) as client:
        blocker = sqlite3.connect(database, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock
        try:
            refused = client.post("/feedback", json=body, headers=headers)
            assert client.get("/search", params={"q": "sofa"}).status_code == 200
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        retried = client.post("/feedback", json=body, headers=headers)
        store = app.state.runtime.store
        assert store.count() == 1
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert "locked" in refused.json()["detail"]
    assert retried.status_code == 200
    assert retried.json()["replayed"] is False  # the refused attempt wrote nothing
    tally = SenderTally(acknowledged={"slow-1": []}, statuses=Counter([503, 200]))
    record_figures("slow store: SQLite locked past the store timeout", tally, 0)
