"""Caption full-text search on SQLite (FTS5 kept in step by triggers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete, text
from sqlalchemy.orm import Session, sessionmaker

from services.caption.pipeline import upsert_rows
from shared.db import Caption, ImageRecord, make_engine, make_session_factory
from shared.db.fulltext import match_captions, query_terms
from shared.db.migrate import base_revision, schema_state, upgrade


def add_images(sessions: sessionmaker[Session], captions: list[str]) -> list[int]:
    ids = []
    with sessions.begin() as session:
        for n, caption in enumerate(captions):
            row = ImageRecord(sha256=f"{n + 1:064x}", filename=f"{n}.jpg", format="JPEG",
                              width=1, height=1, size_bytes=1)
            session.add(row)
            session.flush()
            session.add(Caption(image_id=row.id, text=caption, model="tags"))
            ids.append(row.id)
    return ids


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'fts.db'}")
    upgrade(engine)
    upgrade(engine)  # idempotent
    return make_session_factory(engine)


def test_query_terms_drop_stop_words_and_syntax() -> None:
    assert query_terms('The dogs AND "cats" OR NEAR(x) on a_beach!') == [
        "dogs", "cats", "near", "x", "beach"]
    assert query_terms("the a of") == []


def test_matches_any_word_best_first_with_stemming(sessions: sessionmaker[Session]) -> None:
    dog, cat, dogs_beach, car = add_images(sessions, [
        "a dog on grass", "a cat on a sofa", "two dogs running on a beach", "a red car"])
    with sessions() as session:
        assert match_captions(session, "dog beach", 10) == [dogs_beach, dog]
        assert match_captions(session, "the red", 10) == [car]
        assert match_captions(session, "of the", 10) == []
        assert match_captions(session, 'car" OR *', 10) == [car]  # never FTS5 syntax
        assert len(match_captions(session, "dog", 1)) == 1  # the limit holds


def test_index_follows_caption_updates_and_deletes(sessions: sessionmaker[Session]) -> None:
    first, second = add_images(sessions, ["a red car", "a horse"])
    with sessions.begin() as session:  # the caption worker's upsert rewrites the caption
        upsert_rows(session, Caption, ["image_id", "model"], [
            {"image_id": first, "text": "a blue boat", "model": "tags", "model_version": ""}])
    with sessions.begin() as session:
        session.execute(delete(ImageRecord).where(ImageRecord.id == second))  # FK cascade
    with sessions() as session:
        assert match_captions(session, "car", 10) == []
        assert match_captions(session, "boat", 10) == [first]
        assert match_captions(session, "horse", 10) == []


def test_a_database_from_before_migrations_is_adopted_and_its_captions_indexed(
        tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, base_revision())
    with engine.begin() as conn:  # as an instance from before migrations and full-text search
        for name in ("captions_fts_ai", "captions_fts_ad", "captions_fts_au"):
            conn.execute(text(f"DROP TRIGGER {name}"))
        conn.execute(text("DROP TABLE captions_fts"))
        conn.execute(text("DROP TABLE alembic_version"))
    with engine.begin() as conn:  # a photo and its caption in that schema (0001's columns)
        conn.execute(text(
            "INSERT INTO images (id, sha256, filename, source, format, width, height, "
            "size_bytes, status, attempts, created_at, updated_at) VALUES (1, :sha, '0.jpg', "
            "'upload', 'JPEG', 1, 1, 1, 'indexed', 0, '2024-01-01', '2024-01-01')"),
            {"sha": "1" * 64})
        conn.execute(text(
            "INSERT INTO captions (image_id, text, model, model_version, created_at) "
            "VALUES (1, 'a kite in the sky', 'tags', '', '2024-01-01')"))
    kite = 1
    sessions = make_session_factory(engine)
    assert schema_state(engine).problem() is not None  # services refuse it as it is
    upgrade(engine)  # `capsearch db upgrade`: the baseline adopts it, creates the index, fills it
    assert schema_state(engine).at_head
    with sessions() as session:
        assert match_captions(session, "kite", 10) == [kite]
    engine.dispose()
