"""The database the settings name, opened by admin commands (keys, doctor) directly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db import make_engine, make_session_factory
from shared.db.migrate import require_current, upgrade


@contextmanager
def open_database(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """A session factory on the settings' database, disposed after.

    The embedded mode's own SQLite file (no database URL set) is migrated here, as
    `capsearch serve` does; any other database must be at the head revision already
    (SchemaOutOfDate names `capsearch db upgrade` otherwise).
    """
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        if settings.database_url is None:
            upgrade(engine)
        else:
            require_current(engine)
        yield make_session_factory(engine)
    finally:
        engine.dispose()
