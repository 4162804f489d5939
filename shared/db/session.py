"""Engine and session factory for SQLite (embedded) and Postgres (stack)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")


def make_engine(url: str) -> Engine:
    """An engine with the pragmas/pooling each backend needs."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=True
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    # a dead or unreachable server must fail a request in seconds (503), not hang it
    connect_args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10,
                         pool_timeout=10, connect_args=connect_args)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def make_read_engine(url: str) -> Engine:
    """The engine of the query path's reads. On Postgres: autocommit, so a read is its one
    statement (no BEGIN before it, no ROLLBACK when the session closes), and no pre-ping
    `SELECT 1` at every checkout: a connection the server dropped fails its statement instead,
    which `read_once_more` retries on a fresh one. Three round trips a search become one.
    SQLite: the ordinary engine."""
    if not url.startswith("postgresql"):
        return make_engine(url)
    return create_engine(url, pool_pre_ping=False, isolation_level="AUTOCOMMIT", pool_size=10,
                         max_overflow=10, pool_timeout=10, connect_args={"connect_timeout": 5})


def make_read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reads only, on `make_read_engine`'s engine."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def read_once_more(session_factory: sessionmaker[Session], read: Callable[[Session], T]) -> T:
    """`read(session)`, once more on a new connection when the first one was found dropped
    (a Postgres restart, an idle timeout): what a pre-ping at every checkout would have paid
    for on every read. A database that is down still fails (503 at the edge)."""
    for attempt in (1, 2):
        try:
            with session_factory() as session:
                return read(session)
        except DBAPIError as exc:
            if attempt == 2 or not exc.connection_invalidated:
                raise
    raise AssertionError("unreachable")
