"""Alembic's environment: migrate the connection shared/db/migrate.py hands in, or (for the
`alembic` command, e.g. autogenerating a new revision) the database the settings name."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from shared.db.migrate import ADVISORY_LOCK_ID, include_name
from shared.db.models import Base


def run_migrations(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # a batch migration copies a table and drops the old one: with foreign keys on, the
        # drop would cascade into every child row (SQLite ignores this pragma inside a
        # transaction, so it is set before the migration's transaction begins)
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            include_name=include_name,
            render_as_batch=sqlite,  # SQLite alters most columns only by copying the table
            compare_type=True,
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # concurrent upgrades queue here; the second finds the head and does nothing
                connection.execute(text("SELECT pg_advisory_xact_lock(:id)"),
                                   {"id": ADVISORY_LOCK_ID})
            context.run_migrations()
    finally:
        if sqlite:
            connection.commit()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    from shared.config import get_settings
    from shared.db.session import make_engine

    engine = make_engine(get_settings().sqlalchemy_url)
    try:
        with engine.connect() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run against a database")
main()
