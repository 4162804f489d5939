"""Rows in every table of a database at some revision, and the check that an upgrade kept them.

The tables are reflected from the database, not taken from the models: the rows fit the schema
of the revision the database is at (the baseline, in the upgrade tests), so the tests keep
their meaning as later revisions move the models on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Engine, MetaData, Table, and_, select

from shared.db.fulltext import FTS_TABLE, OCR_FTS_TABLE

Rows = dict[str, list[dict[str, Any]]]
ROWS_PER_TABLE = 2


def _tables(engine: Engine) -> list[Table]:
    metadata = MetaData()
    metadata.reflect(engine)
    return [t for t in metadata.sorted_tables  # parents before children
            if t.name != "alembic_version" and not t.name.startswith((FTS_TABLE, OCR_FTS_TABLE))]


def _value(column: Column[Any], n: int, made: Rows) -> Any:
    """The n-th row's value of a column: a reference to the n-th parent row, or made up."""
    for fk in column.foreign_keys:
        return made[fk.column.table.name][n - 1][fk.column.name]
    kind = column.type.python_type
    if kind is bool:
        return n % 2 == 1
    if kind is int:
        return n if column.primary_key else 1000 + n
    if kind is datetime:
        when = datetime(2024, 1, n, 12, 30)
        return when.replace(tzinfo=UTC) if getattr(column.type, "timezone", False) else when
    if kind is bytes:
        return bytes([n]) * 16
    if kind is str:
        text = f"{column.name}-{n}"
        length = getattr(column.type, "length", None)
        return text[-length:] if length else text
    raise AssertionError(f"no value for {column.table.name}.{column.name} ({column.type})")


def fill_every_table(engine: Engine) -> Rows:
    """ROWS_PER_TABLE rows in every table, every column set (nullable ones too)."""
    made: Rows = {}
    with engine.begin() as conn:
        for table in _tables(engine):
            rows = [{c.name: _value(c, n, made) for c in table.columns}
                    for n in range(1, ROWS_PER_TABLE + 1)]
            conn.execute(table.insert(), rows)
            made[table.name] = rows
    assert made, "the database has no tables"
    return made


def _same(stored: Any, written: Any) -> bool:
    if isinstance(stored, datetime) and isinstance(written, datetime):
        if (stored.tzinfo is None) != (written.tzinfo is None):  # SQLite drops the offset
            stored, written = stored.replace(tzinfo=None), written.replace(tzinfo=None)
    if isinstance(stored, memoryview):
        stored = bytes(stored)
    return bool(stored == written)


def missing_rows(engine: Engine, written: Rows) -> list[str]:
    """What of `written` the database no longer holds: a table, a row, or a column's value
    (columns that a later revision dropped on purpose are not compared)."""
    tables = {t.name: t for t in _tables(engine)}
    missing: list[str] = []
    with engine.connect() as conn:
        for name, rows in written.items():
            table = tables.get(name)
            if table is None:
                missing.append(f"table {name}")
                continue
            keys = [c for c in table.primary_key.columns]
            for row in rows:
                where = and_(*(c == row[c.name] for c in keys))
                found = conn.execute(select(table).where(where)).mappings().all()
                if len(found) != 1:
                    missing.append(f"{name} row {[row[c.name] for c in keys]}")
                    continue
                for column, value in row.items():
                    if column in found[0] and not _same(found[0][column], value):
                        missing.append(f"{name}.{column} of row {[row[c.name] for c in keys]}")
    return missing
