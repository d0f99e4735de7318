"""Durable feedback store: logged events, idempotency keys and the online loop's cursor.

One code path (SQLAlchemy 2.0 Core) for SQLite, the default, and PostgreSQL
(``postgresql+psycopg://user@host/db``).

Durability and ordering:

* A batch of events and its idempotency key are inserted in ONE transaction, and
  :meth:`FeedbackStore.record` returns only after the commit. A request retried with the same
  key finds the key already there (unique violation) and gets the original acknowledgement
  back; nothing is counted twice. The same key with a different body is refused
  (:class:`IdempotencyConflict`).
* SQLite runs in WAL mode with ``synchronous=FULL`` (set on every new connection), so a
  committed transaction survives a killed process and a power cut.
* The online loop reads events with ids above its cursor. Ids must therefore become visible in
  increasing order. SQLite has a single writer, so they do; on PostgreSQL, where concurrent
  transactions can commit out of id order, writers take a transaction-scoped advisory lock
  before inserting, which serialises the short write transactions.
* PostgreSQL sessions run with ``synchronous_commit = on`` whatever the server's default
  (:mod:`shopaug.feedback.connection`).

Faults: when the database cannot take a write (server down, connection lost, read-only, locked
past ``timeout_s``, the SQLite file moved or deleted, the disk full), :meth:`FeedbackStore.record`
raises :class:`StoreUnavailable` (:class:`StoreFull` for a full disk) and has acknowledged
nothing; the store needs no reopening: the next write after the database is back succeeds.

Schema changes: a store opened with ``create=True`` adds the columns a newer version of this
module defines to tables an older version created
(:func:`shopaug.feedback.migrate.add_missing_columns`, ``ALTER TABLE ... ADD COLUMN``,
nullable), so an existing database keeps working and its old rows read back with ``None``
there. The one such column so far is ``propensity``. Indexes added later are created the same
way (:func:`~shopaug.feedback.migrate.add_missing_indexes`): so far the one on ``user_id``,
which :meth:`FeedbackStore.user_history` reads by.

Why one module of this length: the SQL of both backends (SQLite and PostgreSQL) and the
schema it depends on are read together; splitting them would separate a query from its table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import pandas as pd

from shopaug.data.records import EVENTS
from shopaug.errors import ConfigError, require
from shopaug.feedback.connection import (
    StoreFull,
    StoreUnavailable,
    check_sqlite_file,
    engine_options,
    postgres_on_connect,
    sqlite_file,
    sqlite_on_connect,
    unavailable_error,
)
from shopaug.feedback.migrate import add_missing_columns, add_missing_indexes
from shopaug.privacy.pii import default_scrubber

logger = logging.getLogger(__name__)

#: Columns of :meth:`FeedbackStore.read_new` frames and of :func:`events_frame`.
EVENT_COLUMNS = (
    "id",
    "received_at",
    "idempotency_key",
    "event",
    "user_id",
    "session_id",
    "query",
    "query_id",
    "product_id",
    "position",
    "timestamp",
    "propensity",
)
DEFAULT_CONSUMER = "online"
#: Events a session's history is made of (what the user chose, not what was shown).
CHOICE_EVENTS = ("click", "add_to_cart", "purchase")
#: Events that extend a customer's purchase history (:meth:`FeedbackStore.user_history`).
BOUGHT_EVENTS = ("add_to_cart", "purchase")
__all__ = [
    "BOUGHT_EVENTS",
    "CHOICE_EVENTS",
    "DEFAULT_CONSUMER",
    "EVENT_COLUMNS",
    "Acknowledgement",
    "FeedbackEvent",
    "FeedbackStore",
    "IdempotencyConflict",
    "StoreFull",
    "StoreUnavailable",
    "StoredEvent",
    "events_frame",
    "request_fingerprint",
]


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One event as a client sends it. ``event`` is one of impression, click, add_to_cart,
    purchase; ``position`` is the 1-based rank the product was shown at; ``propensity`` (an
    impression's) is the probability in (0, 1] with which the serving policy showed this product
    at this position, what off-policy estimators divide by (None: not known)."""

    event: str
    product_id: str
    query: str | None = None
    query_id: str | None = None
    position: int | None = None
    user_id: str | None = None
    session_id: str | None = None
    timestamp: float | None = None
    propensity: float | None = None

    def __post_init__(self) -> None:
        if self.propensity is not None and not 0.0 < self.propensity <= 1.0:
            raise ValueError(
                f"field 'propensity' is {self.propensity}; expected a number in (0, 1]"
            )
        if self.event not in EVENTS:
            raise ValueError(f"field 'event' is {self.event!r}; expected one of {EVENTS}")
        if not self.product_id:
            raise ValueError("field 'product_id' is empty")
        if self.position is not None and self.position < 1:
            raise ValueError(f"field 'position' is {self.position}; expected 1 or more")


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored: the client's fields plus the store's id and receive time."""

    id: int
    received_at: float
    idempotency_key: str | None
    event: str
    user_id: str | None
    session_id: str | None
    query: str | None
    query_id: str | None
    product_id: str
    position: int | None
    timestamp: float | None
    propensity: float | None = None


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """What a client is told after its events were committed.

    ``event_ids`` are the store ids of the events in request order; ``replayed`` is True when
    the request carried an idempotency key seen before and nothing new was written.
    """

    accepted: int
    event_ids: tuple[int, ...]
    idempotency_key: str | None = None
    replayed: bool = False


class IdempotencyConflict(ValueError):
    """An idempotency key was reused with a different request body."""


def request_fingerprint(events: Sequence[FeedbackEvent]) -> str:
    """sha256 of the canonical JSON of ``events`` (used to detect a key reused for other data).

    A field added later is left out while it is None, so the fingerprint of a request stored
    by an older version (before ``propensity``) still matches its retry."""
    fields = [asdict(event) for event in events]
    for row in fields:
        if row["propensity"] is None:
            del row["propensity"]
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class FeedbackStore:
    """Events, idempotency keys and consumer cursors in one SQL database.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:///run/feedback.sqlite`` or
            ``postgresql+psycopg://postgres@127.0.0.1:5432/test``.
        table_prefix: prepended to every table name (lets tests, or several stores, share a
            database).
        create: create missing tables on open, and add the columns a table created by an older
            version lacks (see the module docstring); with ``False`` the tables must be current.
        timeout_s: how long a write may wait for a connection or a lock before it fails with
            :class:`StoreUnavailable`; None keeps the drivers' defaults (SQLite: 30 s).
        scrub_pii: replace e-mail addresses, phone numbers, card numbers, IBANs and street
            addresses in each event's ``query`` before it is stored
            (:mod:`shopaug.privacy.pii`); :attr:`scrubbed` counts what was replaced.

    Example:
        >>> store = FeedbackStore("sqlite:///:memory:")
        >>> store.record([FeedbackEvent("click", "p1", query="sofa", position=1)]).accepted
        1
    """

    def __init__(
        self,
        url: str,
        *,
        table_prefix: str = "",
        create: bool = True,
        timeout_s: float | None = None,
        scrub_pii: bool = True,
    ) -> None:
        sqlalchemy = require("sqlalchemy", "serve")
        if table_prefix and not table_prefix.replace("_", "").isalnum():
            raise ConfigError(
                f"table_prefix {table_prefix!r}: expected letters, digits and underscores only"
            )
        self.url = url
        self.table_prefix = table_prefix
        self._scrubber = default_scrubber() if scrub_pii else None
        self.scrubbed: Counter[str] = Counter()  # personal data replaced, per kind
        self._scrubbed_lock = threading.Lock()
        try:
            self.engine = sqlalchemy.create_engine(url, **engine_options(url, timeout_s))
        except Exception as error:  # bad URL, missing driver
            raise ConfigError(f"feedback database URL {url!r} cannot be used: {error}") from error
        self._dialect = self.engine.dialect.name
        if self._dialect == "sqlite":
            sqlalchemy.event.listen(self.engine, "connect", sqlite_on_connect(timeout_s))
        elif self._dialect == "postgresql":
            sqlalchemy.event.listen(self.engine, "connect", postgres_on_connect(timeout_s))
        self._metadata, self.events, self.keys, self.cursors = _tables(table_prefix)
        self._lock_key = int(
            hashlib.sha256(f"shopaug:{table_prefix}".encode()).hexdigest()[:15], 16
        )
        if create:
            self._metadata.create_all(self.engine)
            add_missing_columns(self.engine, self.events)
            add_missing_indexes(self.engine, self.events)

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def drop_tables(self) -> None:
        """Drop this store's tables (tests and explicit resets only)."""
        self._metadata.drop_all(self.engine)

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        sqlalchemy = require("sqlalchemy", "serve")
        with self.engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))

    # -- writing --------------------------------------------------------------------------

    def record(
        self, events: Sequence[FeedbackEvent], idempotency_key: str | None = None
    ) -> Acknowledgement:
        """Insert ``events`` in one transaction; return after the commit.

        Args:
            events: one or more events.
            idempotency_key: a client-chosen key; a second request with the same key returns
                the first acknowledgement (``replayed=True``) and writes nothing.

        Raises:
            IdempotencyConflict: the key was used before for a different list of events.
            StoreUnavailable: the database cannot take the write now (:class:`StoreFull`
                when it is full); nothing was acknowledged, a retry later is safe.
            ValueError: ``events`` is empty.
        """
        if not events:
            raise ValueError("no events to record; expected at least one")
        events = self._scrub(events)
        sqlalchemy = require("sqlalchemy", "serve")
        try:
            return self._record(events, idempotency_key)
        except StoreUnavailable as error:
            logger.warning("feedback not recorded: %s", error)
            self.engine.dispose()  # the next write opens the file the path holds then
            raise
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as error:
            unavailable = unavailable_error(error)
            logger.warning("feedback not recorded: %s", unavailable)
            raise unavailable from error

    def _scrub(self, events: Sequence[FeedbackEvent]) -> Sequence[FeedbackEvent]:
        """``events`` with personal data in their queries replaced (before the fingerprint, so
        a retried request still matches its first acknowledgement)."""
        if self._scrubber is None:
            return events
        queries, counts = self._scrubber.scrub_texts(event.query or "" for event in events)
        if not counts:
            return events
        with self._scrubbed_lock:
            self.scrubbed.update(counts)
        logger.info("feedback: replaced personal data in queries before storing: %s", dict(counts))
        return [
            replace(event, query=query) if event.query else event
            for event, query in zip(events, queries)
        ]

    def _record(
        self, events: Sequence[FeedbackEvent], idempotency_key: str | None
    ) -> Acknowledgement:
        sqlalchemy = require("sqlalchemy", "serve")
        fingerprint = request_fingerprint(events) if idempotency_key is not None else None
        if idempotency_key is not None:
            previous = self._acknowledgement(idempotency_key, fingerprint)
            if previous is not None:
                return previous
        now = time.time()
        try:
            with self.engine.begin() as connection:
                if self._dialect == "postgresql":
                    connection.execute(
                        sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": self._lock_key},
                    )
                if idempotency_key is not None:
                    connection.execute(
                        self.keys.insert().values(
                            key=idempotency_key, fingerprint=fingerprint, created_at=now
                        )
                    )
                ids: list[int] = []
                for event in events:  # one statement per row, so ids come back in order
                    result = connection.execute(
                        self.events.insert().values(
                            received_at=now, idempotency_key=idempotency_key, **asdict(event)
                        )
                    )
                    key = result.inserted_primary_key
                    if key is None:  # the events table always has an autoincrement id
                        raise RuntimeError(f"{self.events.name}: the insert returned no id")
                    ids.append(int(key[0]))
                acknowledgement = Acknowledgement(len(ids), tuple(ids), idempotency_key)
                if idempotency_key is not None:
                    connection.execute(
                        self.keys.update()
                        .where(self.keys.c.key == idempotency_key)
                        .values(acknowledgement=json.dumps(list(ids)))
                    )
                database_file = sqlite_file(connection)
                check_sqlite_file(database_file)  # before the commit: nothing to a lost file
            check_sqlite_file(database_file)  # moved during the commit: not acknowledged
        except sqlalchemy.exc.IntegrityError:
            if idempotency_key is None:
                raise
            # A concurrent request with the same key committed first.
            previous = self._acknowledgement(idempotency_key, fingerprint)
            if previous is None:
                raise
            return previous
        logger.debug("recorded %d events (key %s)", len(ids), idempotency_key)
        return acknowledgement

    def _acknowledgement(self, key: str, fingerprint: str | None) -> Acknowledgement | None:
        with self.engine.connect() as connection:
            row = connection.execute(self.keys.select().where(self.keys.c.key == key)).one_or_none()
        if row is None:
            return None
        if row.fingerprint != fingerprint:
            raise IdempotencyConflict(
                f"Idempotency-Key {key!r} was already used for a different list of events"
            )
        ids = tuple(int(i) for i in json.loads(row.acknowledgement or "[]"))
        return Acknowledgement(len(ids), ids, key, replayed=True)

    # -- reading --------------------------------------------------------------------------

    def count(self) -> int:
        """Number of stored events."""
        sqlalchemy = require("sqlalchemy", "serve")
        with self.engine.connect() as connection:
            return int(
                connection.execute(
                    sqlalchemy.select(sqlalchemy.func.count()).select_from(self.events)
                ).scalar_one()
            )

    def read_new(
        self,
        after_id: int | None = None,
        *,
        limit: int | None = None,
        consumer: str = DEFAULT_CONSUMER,
    ) -> list[StoredEvent]:
        """Events with an id above ``after_id`` (default: the consumer's cursor), oldest first."""
        if after_id is None:
            after_id = self.cursor(consumer)
        statement = (
            self.events.select().where(self.events.c.id > after_id).order_by(self.events.c.id)
        )
        if limit is not None:
            statement = statement.limit(limit)
        with self.engine.connect() as connection:
            rows = connection.execute(statement).all()
        return [StoredEvent(**_row_fields(row._mapping)) for row in rows]

    def session_history(self, session_id: str, *, limit: int = 50) -> list[str]:
        """Products the session clicked, added to cart or bought, oldest first, no repeats."""
        products = self._products(
            self.events.c.session_id == session_id, CHOICE_EVENTS, limit=limit * 4
        )
        seen: dict[str, None] = {}
        for product_id in products:
            seen.pop(product_id, None)
            seen[product_id] = None  # most recent occurrence last
        return list(seen)[-limit:]

    def user_history(
        self,
        user_id: str,
        *,
        events: Sequence[str] = BOUGHT_EVENTS,
        limit: int | None = None,
    ) -> list[str]:
        """Products of ``user_id``'s events of the kinds ``events`` (default: added to cart or
        bought), oldest first in the order the store committed them, repeats kept (one entry
        per event: how often an item was bought counts). ``limit`` keeps the most recent.

        This is how a customer's purchases logged through ``/feedback`` reach ``/recommend``
        by ``customer_id``; the ``user_id`` column is indexed for it.
        """
        unknown = sorted(set(events) - set(EVENTS))
        if unknown:
            raise ValueError(f"events {unknown}: expected kinds among {EVENTS}")
        return self._products(self.events.c.user_id == user_id, tuple(events), limit=limit)

    def _products(self, where: Any, kinds: Sequence[str], *, limit: int | None) -> list[str]:
        """``product_id`` of the events matching ``where`` whose kind is in ``kinds``, oldest
        first (store id order); with ``limit``, only the most recent ``limit``."""
        statement = (
            self.events.select()
            .with_only_columns(self.events.c.product_id)
            .where(where)
            .where(self.events.c.event.in_(list(kinds)))
            .order_by(self.events.c.id.desc())
        )
        if limit is not None:
            statement = statement.limit(limit)
        with self.engine.connect() as connection:
            products = connection.execute(statement).scalars().all()
        return [str(product_id) for product_id in reversed(products)]

    # -- consumption cursor ---------------------------------------------------------------

    def cursor(self, consumer: str = DEFAULT_CONSUMER) -> int:
        """The last event id ``consumer`` marked consumed (0 when none)."""
        with self.engine.connect() as connection:
            value = connection.execute(
                self.cursors.select().where(self.cursors.c.consumer == consumer)
            ).one_or_none()
        return 0 if value is None else int(value.last_id)

    def mark_consumed(self, up_to_id: int, consumer: str = DEFAULT_CONSUMER) -> int:
        """Move ``consumer``'s cursor to ``up_to_id`` (never backwards); return the new cursor."""
        sqlalchemy = require("sqlalchemy", "serve")
        with self.engine.begin() as connection:
            current = connection.execute(
                self.cursors.select().where(self.cursors.c.consumer == consumer)
            ).one_or_none()
            if current is None:
                try:
                    with connection.begin_nested():
                        connection.execute(
                            self.cursors.insert().values(
                                consumer=consumer, last_id=int(up_to_id), updated_at=time.time()
                            )
                        )
                    return int(up_to_id)
                except sqlalchemy.exc.IntegrityError:  # created concurrently
                    pass
            connection.execute(
                self.cursors.update()
                .where(self.cursors.c.consumer == consumer)
                .where(self.cursors.c.last_id < int(up_to_id))
                .values(last_id=int(up_to_id), updated_at=time.time())
            )
        return self.cursor(consumer)

    def backlog(self, consumer: str = DEFAULT_CONSUMER) -> int:
        """Number of events ``consumer`` has not consumed yet."""
        sqlalchemy = require("sqlalchemy", "serve")
        after = self.cursor(consumer)
        with self.engine.connect() as connection:
            return int(
                connection.execute(
                    sqlalchemy.select(sqlalchemy.func.count())
                    .select_from(self.events)
                    .where(self.events.c.id > after)
                ).scalar_one()
            )


def events_frame(events: Iterable[StoredEvent | FeedbackEvent | Mapping[str, Any]]) -> pd.DataFrame:
    """Events -> a DataFrame with the :data:`EVENT_COLUMNS` (missing fields become None)."""
    rows = []
    for event in events:
        rows.append(dict(event) if isinstance(event, Mapping) else asdict(event))
    frame = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    return frame


def _row_fields(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {name: mapping[name] for name in EVENT_COLUMNS}


def _tables(prefix: str) -> tuple[Any, Any, Any, Any]:
    sqlalchemy = require("sqlalchemy", "serve")
    sa = sqlalchemy
    metadata = sa.MetaData()
    # BIGINT ids on PostgreSQL; SQLite needs INTEGER PRIMARY KEY for its rowid autoincrement.
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    events = sa.Table(
        f"{prefix}feedback_events",
        metadata,
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("received_at", sa.Float(precision=53), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("event", sa.String(32), nullable=False),
        # indexed since user_history (a customer's purchases for /recommend): migrate.py adds
        # the index to old tables on open
        sa.Column("user_id", sa.String(200), nullable=True, index=True),
        sa.Column("session_id", sa.String(200), nullable=True, index=True),
        sa.Column("query", sa.Text, nullable=True),
        sa.Column("query_id", sa.String(200), nullable=True),
        sa.Column("product_id", sa.String(200), nullable=False),
        sa.Column("position", sa.Integer, nullable=True),
        sa.Column("timestamp", sa.Float(precision=53), nullable=True),
        # added after the first release: nullable, added to old tables on open (migrate.py)
        sa.Column("propensity", sa.Float(precision=53), nullable=True),
    )
    keys = sa.Table(
        f"{prefix}feedback_idempotency_keys",
        metadata,
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("acknowledgement", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
    )
    cursors = sa.Table(
        f"{prefix}feedback_cursors",
        metadata,
        sa.Column("consumer", sa.String(100), primary_key=True),
        sa.Column("last_id", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Float(precision=53), nullable=False),
    )
    return metadata, events, keys, cursors
