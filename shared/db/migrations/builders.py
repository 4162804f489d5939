"""What the revisions build alike: 64-bit ids, and the full-text objects over a text column.

Frozen like the revisions themselves: what these return is what old revisions made, so a
change here would change history. A new kind of object gets a new builder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import sqlalchemy as sa
from alembic import op

# 64-bit ids in Postgres; SQLite auto-increments only an INTEGER PRIMARY KEY
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class FullText(NamedTuple):
    """The statements that make a text column searchable, per dialect."""

    postgresql: tuple[str, ...]
    sqlite: tuple[str, ...]


def fulltext(table: str, column: str, rowid: str) -> FullText:
    """`table.column` searchable as text (shared/db/fulltext.py): Postgres, a GIN index on the
    column's tsvector; SQLite, an external-content FTS5 table `<table>_fts` (rows keyed by
    `rowid`) kept in step by triggers."""
    fts = f"{table}_fts"
    delete = (f"INSERT INTO {fts}({fts}, rowid, {column}) "
              f"VALUES ('delete', old.{rowid}, old.{column}); ")
    insert = f"INSERT INTO {fts}(rowid, {column}) VALUES (new.{rowid}, new.{column}); "
    return FullText(
        postgresql=(f"CREATE INDEX IF NOT EXISTS ix_{table}_{column}_fts ON {table} "
                    f"USING gin (to_tsvector('english'::regconfig, {column}))",),
        sqlite=(
            f"CREATE VIRTUAL TABLE {fts} USING fts5({column}, content='{table}', "
            f"content_rowid='{rowid}', tokenize='porter unicode61')",
            f"CREATE TRIGGER IF NOT EXISTS {fts}_ai AFTER INSERT ON {table} BEGIN {insert}END",
            f"CREATE TRIGGER IF NOT EXISTS {fts}_ad AFTER DELETE ON {table} BEGIN {delete}END",
            f"CREATE TRIGGER IF NOT EXISTS {fts}_au AFTER UPDATE ON {table} BEGIN "
            f"{delete}{insert}END",
        ))


def execute_for_dialect(statements: Mapping[str, Sequence[str]]) -> None:
    """Run the statements listed for the connection's dialect (none for another one)."""
    for ddl in statements.get(op.get_bind().dialect.name, ()):
        op.execute(ddl)
