"""The query path's read sessions: one more try on a dropped connection, none otherwise."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from shared.db import make_read_engine
from shared.db.session import read_once_more


def dropped(invalidated: bool) -> DBAPIError:
    return DBAPIError("SELECT 1", {}, Exception("server closed the connection"),
                      connection_invalidated=invalidated)


def factory(outcomes: list[Any]) -> Any:
    """A session factory whose sessions are the next outcome (raised when an exception)."""
    def make() -> Any:
        return nullcontext(outcomes.pop(0))
    return make


def test_a_dropped_connection_is_read_once_more_on_a_new_one() -> None:
    calls: list[str] = []

    def read(session: Any) -> str:
        calls.append(session)
        if session == "stale":
            raise dropped(invalidated=True)
        return "rows"

    assert read_once_more(factory(["stale", "fresh"]), read) == "rows"
    assert calls == ["stale", "fresh"]


def test_other_database_errors_and_a_second_drop_are_raised() -> None:
    def read(session: Any) -> str:
        raise session

    with pytest.raises(DBAPIError):
        read_once_more(factory([dropped(invalidated=False), "unused"]), read)
    with pytest.raises(DBAPIError):
        read_once_more(factory([dropped(invalidated=True), dropped(invalidated=True)]), read)


def test_the_postgres_read_engine_autocommits_without_a_pre_ping() -> None:
    engine = make_read_engine("postgresql+psycopg2://nobody@127.0.0.1:1/none")
    assert engine.pool._pre_ping is False
    assert engine.get_execution_options().get("isolation_level") == "AUTOCOMMIT" or \
        engine.dialect._on_connect_isolation_level == "AUTOCOMMIT"
    sqlite = make_read_engine("sqlite://")
    assert sqlite.dialect.name == "sqlite"
