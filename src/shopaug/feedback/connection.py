"""Connections of the feedback store: per-session settings, the SQLite file check, and what a
database error means for a client.

Every new connection gets the settings durability depends on, whatever the server's defaults:

* SQLite: WAL journal, ``synchronous=FULL``, a busy timeout.
* PostgreSQL: ``synchronous_commit = on`` (a server or role configured with ``off`` would
  acknowledge commits that a crash can still lose), and, when the store has a timeout,
  ``statement_timeout`` and ``lock_timeout``, so a slow or locked database fails a write in
  bounded time instead of holding the request.

SQLite in WAL mode keeps writing through its open file handles after the database file or its
folder is moved or deleted: those commits land in a file nobody will read again. Each
connection therefore remembers the identity (device, inode) of the file it opened, and
:func:`check_sqlite_file` compares it with what the path holds now; the store calls it before
and after each commit, so an event written to a vanished file is never acknowledged.

:func:`unavailable_error` turns a driver error into :class:`StoreFull` (the database or its disk
is full: SQLITE_FULL, PostgreSQL ``disk_full``) or :class:`StoreUnavailable` (anything else that
a later retry can cure: server down, connection lost, read-only, locked, timed out).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from shopaug.errors import ShopaugError

logger = logging.getLogger(__name__)

#: Key of the file identity in a pooled connection's ``info`` dict.
SQLITE_FILE_KEY = "shopaug_sqlite_file"
#: PostgreSQL SQLSTATE of ``disk_full``.
POSTGRES_DISK_FULL = "53100"


class StoreUnavailable(ShopaugError, RuntimeError):
    """The store cannot take the write now; nothing of the request was acknowledged.

    A retry later (with the same ``Idempotency-Key``, so nothing is counted twice) is safe.
    """


class StoreFull(StoreUnavailable):
    """The database or the disk under it is full; nothing of the request was acknowledged."""


def engine_options(url: str, timeout_s: float | None) -> dict[str, Any]:
    """``create_engine`` keyword arguments for ``url``.

    Args:
        url: the SQLAlchemy URL.
        timeout_s: how long a connection attempt or a wait for a lock may take; None keeps
            the defaults (SQLite waits 30 s for the write lock; PostgreSQL waits as long as
            the server lets it).
    """
    if url.startswith("sqlite"):
        # Threads of the service share the pool; writers wait for the write lock.
        wait = 30.0 if timeout_s is None else timeout_s
        return {"connect_args": {"timeout": wait, "check_same_thread": False}}
    options: dict[str, Any] = {"pool_pre_ping": True}
    if timeout_s is not None and url.startswith("postgresql"):
        # libpq counts whole seconds and treats anything below 2 as 2.
        options["connect_args"] = {"connect_timeout": max(2, round(timeout_s))}
    return options


def sqlite_on_connect(timeout_s: float | None) -> Any:
    """A ``connect`` listener: WAL, full sync, busy timeout, and the file's identity."""
    busy_ms = int(1000 * (30.0 if timeout_s is None else timeout_s))

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            rows = cursor.execute("PRAGMA database_list").fetchall()
        finally:
            cursor.close()
        path = next((row[2] for row in rows if row[1] == "main"), "")
        if path:  # "" for an in-memory database
            stat = os.stat(path)
            record.info[SQLITE_FILE_KEY] = (path, stat.st_dev, stat.st_ino)

    return on_connect


def postgres_on_connect(timeout_s: float | None) -> Any:
    """A ``connect`` listener: ``synchronous_commit = on`` and the statement/lock timeouts.

    The settings are made with autocommit on, so the pool's rollback-on-return cannot undo
    them (a ``SET`` inside a rolled-back transaction is undone).
    """
    settings = {"synchronous_commit": "on"}
    if timeout_s is not None:
        milliseconds = str(max(1, int(1000 * timeout_s)))
        settings.update(statement_timeout=milliseconds, lock_timeout=milliseconds)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        try:
            for name, value in settings.items():
                cursor.execute("SELECT set_config(%s, %s, false)", (name, value))
        finally:
            cursor.close()
            dbapi_connection.autocommit = autocommit

    return on_connect


def sqlite_file(connection: Any) -> tuple[str, int, int] | None:
    """The (path, device, inode) the pooled ``connection`` opened, or None (in memory)."""
    identity: tuple[str, int, int] | None = connection.info.get(SQLITE_FILE_KEY)
    return identity


def check_sqlite_file(identity: tuple[str, int, int] | None) -> None:
    """Raise :class:`StoreUnavailable` when the path no longer holds the file that was opened.

    Args:
        identity: what :func:`sqlite_file` returned for the connection that wrote.
    """
    if identity is None:
        return
    path, device, inode = identity
    try:
        stat = os.stat(path)
    except OSError as error:
        raise StoreUnavailable(
            f"the SQLite database {path} is gone ({error.strerror}); nothing was acknowledged"
        ) from error
    if (stat.st_dev, stat.st_ino) != (device, inode):
        raise StoreUnavailable(
            f"the SQLite database {path} was replaced since this connection opened it; "
            "nothing was acknowledged"
        )


def unavailable_error(error: Exception) -> StoreUnavailable:
    """The :class:`StoreUnavailable` (or :class:`StoreFull`) that ``error`` means."""
    original = getattr(error, "orig", None) or error
    name = getattr(original, "sqlite_errorname", None)
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    text = str(original).strip().splitlines()[0] if str(original).strip() else repr(original)
    if name == "SQLITE_FULL" or state == POSTGRES_DISK_FULL:
        return StoreFull(f"the feedback database is full: {text}")
    return StoreUnavailable(f"the feedback database cannot take writes now: {text}")
