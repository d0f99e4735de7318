"""Bring a feedback table created by an older version of the store up to the current schema.

The store's tables only ever gain nullable columns (``propensity`` was the first), so the
whole migration path is ``ALTER TABLE <table> ADD COLUMN <column> <type>`` for each column of
the current :class:`sqlalchemy.Table` that the database's table lacks. Old rows read back
with ``NULL`` there. The statement is built from SQLAlchemy's own type compiler and
identifier quoting, so it is the same DDL ``create_all`` would write, on SQLite and on
PostgreSQL. Two processes opening one old database at once may both try: PostgreSQL takes
``ADD COLUMN IF NOT EXISTS``; on SQLite the loser's "duplicate column" error is checked
against the table and ignored when the column is there.

Indexes defined later (the one on ``user_id``) are created the same way, by
:func:`add_missing_indexes`: ``CREATE INDEX`` through SQLAlchemy for each index of the current
table that the database lacks. An index changes no row and no answer, only how fast a lookup is.
"""

from __future__ import annotations

import logging
from typing import Any

from shopaug.errors import require

logger = logging.getLogger(__name__)


def missing_columns(engine: Any, table: Any) -> list[str]:
    """Names of ``table``'s columns that the database's table of that name lacks, in order."""
    sqlalchemy = require("sqlalchemy", "serve")
    present = {column["name"] for column in sqlalchemy.inspect(engine).get_columns(table.name)}
    return [column.name for column in table.columns if column.name not in present]


def add_missing_columns(engine: Any, table: Any) -> list[str]:
    """Add to the database's ``table`` every nullable column it lacks; return their names.

    Raises:
        ValueError: a missing column is not nullable (it cannot be added to a table with
            rows); the message names the table and the column.
    """
    sqlalchemy = require("sqlalchemy", "serve")
    missing = missing_columns(engine, table)
    if not missing:
        return []
    preparer = engine.dialect.identifier_preparer
    added = []
    for name in missing:
        column = table.columns[name]
        if not column.nullable:
            raise ValueError(
                f"table {table.name}: column {name!r} is missing and NOT NULL; it cannot be "
                "added to existing rows"
            )
        kind = column.type.compile(dialect=engine.dialect)
        guard = "IF NOT EXISTS " if engine.dialect.name == "postgresql" else ""
        statement = (
            f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {guard}"
            f"{preparer.format_column(column)} {kind}"
        )
        try:
            with engine.begin() as connection:
                connection.execute(sqlalchemy.text(statement))
        except sqlalchemy.exc.OperationalError:
            if name in missing_columns(engine, table):  # not a concurrent opener: a real error
                raise
        logger.info("feedback store: added column %s to %s", name, table.name)
        added.append(name)
    return added


def add_missing_indexes(engine: Any, table: Any) -> list[str]:
    """Create every index of ``table`` that the database's table lacks; return their names.

    A concurrent opener that created the same index first is not an error (checked against
    the table, as for columns).
    """
    sqlalchemy = require("sqlalchemy", "serve")

    def present() -> set[str]:
        return {str(index["name"]) for index in sqlalchemy.inspect(engine).get_indexes(table.name)}

    existing = present()
    added = []
    for index in sorted(table.indexes, key=lambda index: str(index.name)):
        if index.name in existing:
            continue
        try:
            index.create(engine, checkfirst=True)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError):
            if index.name not in present():  # not a concurrent opener: a real error
                raise
        logger.info("feedback store: added index %s to %s", index.name, table.name)
        added.append(str(index.name))
    return added
