"""The database the settings name, opened by admin commands (keys, doctor) directly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db import create_schema, make_engine, make_session_factory


@contextmanager
def open_database(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """A session factory on the settings' database (schema created if missing), disposed after."""
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        create_schema(engine)
        yield make_session_factory(engine)
    finally:
        engine.dispose()
