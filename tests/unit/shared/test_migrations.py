"""Alembic migrations on SQLite: head = the models, where a database stands, upgrades keep rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from shared.db import Base, make_engine
from shared.db.migrate import (
    base_revision,
    head_revision,
    include_name,
    require_current,
    schema_state,
    upgrade,
)
from shared.db.models import TAKEN_ORDER_INDEX
from shared.errors import SchemaOutOfDate
from tests.support.migrations import fill_every_table, missing_rows


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'capsearch.db'}")
    yield engine
    engine.dispose()


def schema_diff(engine: Engine) -> list[object]:
    """What autogenerate would write: differences between the database and the models."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_name": include_name, "compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_head_is_the_models(engine: Engine) -> None:
    """A model change without a migration fails here (write one: docs/deploy.md)."""
    upgrade(engine)
    assert schema_diff(engine) == []
    with engine.connect() as conn:  # and the full-text objects, which no model declares
        names = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}
    assert {"captions_fts", "captions_fts_ai", "captions_fts_ad", "captions_fts_au"} <= names


def test_an_empty_database_is_behind_and_says_what_to_run(engine: Engine) -> None:
    state = schema_state(engine)
    assert state.current is None and not state.has_tables and not state.at_head
    assert "empty" in (state.problem() or "")
    with pytest.raises(SchemaOutOfDate, match="run `capsearch db upgrade`"):
        require_current(engine)


def test_upgrade_reaches_the_head_and_is_idempotent(engine: Engine) -> None:
    upgrade(engine)
    upgrade(engine)
    state = schema_state(engine)
    assert state.at_head and state.current == head_revision() and state.problem() is None
    require_current(engine)


def test_a_revision_this_code_does_not_know_is_refused(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as conn:  # as if a newer capsearch had migrated it
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    state = schema_state(engine)
    assert not state.known
    assert "does not know" in (state.problem() or "")


def test_a_database_from_before_migrations_is_adopted(engine: Engine) -> None:
    upgrade(engine, base_revision())
    with engine.begin() as conn:  # what `create_all` left before migrations existed
        conn.execute(text("DROP TABLE alembic_version"))
    assert "before migrations" in (schema_state(engine).problem() or "")
    upgrade(engine)
    assert schema_state(engine).at_head and schema_diff(engine) == []


def test_upgrading_from_the_baseline_keeps_every_row(engine: Engine) -> None:
    upgrade(engine, base_revision())
    written = fill_every_table(engine)
    assert len(written) >= 8  # every table of the baseline, not a few
    upgrade(engine)
    assert schema_state(engine).at_head
    assert missing_rows(engine, written) == []
    assert taken_at_of_every_image(engine) == [None] * len(written["images"])


def taken_at_of_every_image(engine: Engine) -> list[object]:
    """The capture dates of the rows (revision 0002 adds the column: null until backfilled)."""
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT taken_at FROM images ORDER BY id"))]


def test_revision_0002_adds_taken_at_and_its_index(engine: Engine) -> None:
    upgrade(engine, "0001")
    upgrade(engine, "0002")
    with engine.connect() as conn:
        columns = {c["name"]: c for c in inspect(conn).get_columns("images")}
        indexes = {i["name"]: i["column_names"] for i in inspect(conn).get_indexes("images")}
    assert columns["taken_at"]["nullable"]
    assert indexes[TAKEN_ORDER_INDEX] == ["taken_at", "id"]
    with engine.connect() as conn:  # and `sort=taken`'s order reads it, no sort step
        plan = " ".join(str(r[-1]) for r in conn.execute(text(
            "EXPLAIN QUERY PLAN SELECT id FROM images "
            "ORDER BY taken_at DESC NULLS LAST, id DESC LIMIT 50")))
    assert TAKEN_ORDER_INDEX in plan and "TEMP B-TREE" not in plan


def test_foreign_keys_are_enforced_again_after_an_upgrade(engine: Engine) -> None:
    upgrade(engine)  # migrations run with them off (batch copies would cascade otherwise)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_the_duplicates_revision_keeps_every_row_and_its_tables_cascade(engine: Engine
                                                                       ) -> None:
    """0001 → head keeps the rows; the new pair and group rows go with their images."""
    upgrade(engine, base_revision())
    written = fill_every_table(engine)
    upgrade(engine)
    assert missing_rows(engine, written) == []
    a, b = (row["id"] for row in written["images"])
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO duplicate_pairs (image_a, image_b, score) "
                          "VALUES (:a, :b, 0.9)"), {"a": a, "b": b})
        conn.execute(text("INSERT INTO duplicate_members (image_id, group_id) "
                          "VALUES (:a, :a), (:b, :a)"), {"a": a, "b": b})
        conn.execute(text("DELETE FROM images WHERE id = :b"), {"b": b})
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM duplicate_pairs")).scalar() == 0
        assert conn.execute(text("SELECT image_id FROM duplicate_members")).scalars().all() == [a]


def test_revision_0004_adds_photo_texts_and_keeps_every_row(engine: Engine) -> None:
    from alembic import command

    from shared.db import ImageText
    from shared.db.fulltext import match_photo_text, photo_text_document
    from shared.db.migrate import alembic_config
    from shared.db.session import make_session_factory
    from shared.db.texts import count_ocr_waiting

    upgrade(engine, "0001")
    written = fill_every_table(engine)
    with engine.begin() as conn:  # photos indexed before the OCR stage existed
        conn.execute(text("UPDATE images SET status = 'indexed'"))
    for row in written["images"]:
        row["status"] = "indexed"
    upgrade(engine, "0004")
    assert missing_rows(engine, written) == []
    sessions = make_session_factory(engine)
    image_id = written["images"][0]["id"]
    with sessions.begin() as session:
        assert count_ocr_waiting(session) == len(written["images"])  # read later, not lost
        session.add(ImageText(image_id=image_id, model="pp-ocrv4", text="EXIT",
                              confidence=0.9, words=photo_text_document("EXIT")))
    with sessions() as session:
        assert match_photo_text(session, "exit", 10) == [image_id]

    with engine.connect() as conn:  # and back: the texts go, every other row stays
        command.downgrade(alembic_config(conn), "0003")
        conn.commit()
    assert missing_rows(engine, written) == []
    with engine.connect() as conn:
        names = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}
    assert not {n for n in names if n.startswith("image_texts")}
