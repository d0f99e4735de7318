"""Fault injection for the fault tests (tests/test_faults_*.py): a client that keeps sending
feedback and retries what was not acknowledged, SQLite faults set through the driver, a
throwaway PostgreSQL cluster, and the figures the tests report.

Nothing here is imported by the package; the tests add this folder to ``sys.path`` as pytest
does for every test module.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy

from shopaug.feedback.store import FeedbackStore

#: When set, each fault test appends its figures (one JSON line) to this file;
#: benchmarks/faults.py runs the tests with it and writes the table into RESULTS.md.
FIGURES_ENV = "SHOPAUG_FAULT_FIGURES"
PRODUCTS = ("p1", "p2", "p3", "p4", "p5", "p6")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class SenderTally:
    """What a :class:`FeedbackSender` saw."""

    acknowledged: dict[str, list[int]] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after_missing: int = 0
    transport_errors: int = 0
    bodies: dict[int, str] = field(default_factory=dict)  # last body of each non-200 status

    @property
    def refused(self) -> int:
        """Answers that asked the client to retry (503/507 with Retry-After)."""
        return self.statuses[503] + self.statuses[507]

    @property
    def other_5xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500) - self.refused


class FeedbackSender:
    """A client thread posting one click per request, each with its own Idempotency-Key.

    A request that is not acknowledged is retried with the same key (as a client honouring
    ``Retry-After`` would, after ``pause`` seconds instead, to keep tests short), so every key
    ends up stored exactly once unless the sender is stopped before.

    Args:
        post: ``post(path, json=..., headers=...)`` of an httpx or Starlette test client.
        prefix: prefix of the keys (several senders can share a store).
    """

    def __init__(self, post: Callable[..., Any], prefix: str = "k", pause: float = 0.05) -> None:
        self._post = post
        self._prefix = prefix
        self._pause = pause
        self._stop = threading.Event()
        self.tally = SenderTally()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"sender-{prefix}", daemon=True)

    def __enter__(self) -> FeedbackSender:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def acknowledged_count(self) -> int:
        with self._lock:
            return len(self.tally.acknowledged)

    def status_count(self, *statuses: int) -> int:
        with self._lock:
            return sum(self.tally.statuses[s] for s in statuses)

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            key = f"{self._prefix}-{number}"
            body = {"event": "click", "product_id": PRODUCTS[number % 6], "session_id": key}
            while not self._stop.is_set():
                try:
                    response = self._post("/feedback", json=body, headers={"Idempotency-Key": key})
                except Exception:  # connection refused or reset: retry the same key
                    with self._lock:
                        self.tally.transport_errors += 1
                    time.sleep(self._pause)
                    continue
                with self._lock:
                    self.tally.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        self.tally.acknowledged[key] = response.json()["event_ids"]
                    else:
                        self.tally.bodies[response.status_code] = response.text
                        if response.status_code in (503, 507) and not response.headers.get(
                            "Retry-After"
                        ):
                            self.tally.retry_after_missing += 1
                if response.status_code == 200:
                    break
                time.sleep(self._pause)
            number += 1


def stored_by_key(store: FeedbackStore) -> dict[str, list[int]]:
    """Stored event ids per idempotency key."""
    stored: dict[str, list[int]] = {}
    for event in store.read_new(0):
        if event.idempotency_key is not None:
            stored.setdefault(event.idempotency_key, []).append(event.id)
    return stored


def lost_events(tally: SenderTally, store: FeedbackStore) -> list[str]:
    """Keys acknowledged with ids that the store does not hold (must be empty)."""
    stored = stored_by_key(store)
    return [key for key, ids in tally.acknowledged.items() if stored.get(key) != ids]


def record_figures(fault: str, tally: SenderTally, lost: int, faults_injected: int = 1) -> None:
    """Append the figures of one fault test to ``$SHOPAUG_FAULT_FIGURES`` (when set)."""
    target = os.environ.get(FIGURES_ENV)
    if not target:
        return
    row = {
        "fault": fault,
        "faults_injected": faults_injected,
        "acknowledged": len(tally.acknowledged),
        "lost": lost,
        "refused": tally.refused,
        "refused_without_retry_after": tally.retry_after_missing,
        "other_5xx": tally.other_5xx,
    }
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


class SqliteFault:
    """Sets a PRAGMA on every connection the store checks out while the fault is on.

    The PRAGMA makes SQLite itself refuse the write, through the same error path a real fault
    takes: ``query_only`` gives SQLITE_READONLY ("attempt to write a readonly database", what a
    read-only file gives), ``max_page_count`` gives SQLITE_FULL ("database or disk is full",
    what ENOSPC gives).
    """

    def __init__(self, store: FeedbackStore, on: str, off: str) -> None:
        self.store = store
        self._on, self._off = on, off
        self.active = False
        sqlalchemy.event.listen(store.engine, "checkout", self._apply)

    def _apply(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(self._on if self.active else self._off)
        finally:
            cursor.close()

    @contextmanager
    def injected(self) -> Iterator[None]:
        self.active = True
        try:
            yield
        finally:
            self.active = False


def page_count(store: FeedbackStore) -> int:
    with store.engine.connect() as connection:
        return int(connection.exec_driver_sql("PRAGMA page_count").scalar_one())


def integrity(url: str) -> str:
    """``PRAGMA integrity_check`` of a SQLite database, through a fresh connection."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql("PRAGMA integrity_check").scalars().all()
    finally:
        engine.dispose()
    return "; ".join(str(row) for row in rows)


# -- a throwaway PostgreSQL cluster ---------------------------------------------------------


def cluster_user() -> str | None:
    """The user to run initdb/pg_ctl as: None (ourselves) unless we are root, which initdb
    refuses; then an unprivileged user that exists ('postgres', else 'nobody')."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    return None


def cluster_unavailable_reason() -> str | None:
    """Why a throwaway cluster cannot be started here, or None."""
    for tool in ("initdb", "pg_ctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (PostgreSQL server binaries are needed)"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root, initdb refuses root, and runuser is missing"
        if cluster_user() is None:
            return "running as root, initdb refuses root, and no unprivileged user exists"
    return None


class PostgresCluster:
    """``initdb`` + ``pg_ctl`` on a temporary folder and a free port (never the shared server).

    Run as an unprivileged user through ``runuser`` when the tests run as root.
    """

    def __init__(self) -> None:
        self.user = cluster_user()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="shopaug-pg-"))
        self.data = self.root / "data"
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str, timeout: float = 120) -> None:
        full = list(command)
        if self.user is not None:
            full = ["runuser", "-u", self.user, "--", *full]
        result = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(full)} failed ({result.returncode}): {result.stderr or result.stdout}"
            )

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E",
            "UTF8",
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options,
            "-w", "-t", "120", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "120", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(Exception):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def execute(self, sql: str) -> list[Any]:
        """Run one statement as the superuser in autocommit mode; return its rows."""
        engine = sqlalchemy.create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                result = connection.exec_driver_sql(sql)
                return list(result.all()) if result.returns_rows else []
        finally:
            engine.dispose()
