"""Caption full-text search on Postgres: the GIN expression index, used by the query."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from shared.db import Caption, ImageRecord, make_engine, make_session_factory
from shared.db.fulltext import match_captions
from shared.db.migrate import upgrade

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    upgrade(engine)
    upgrade(engine)  # idempotent
    yield engine
    engine.dispose()


def test_postgres_matches_any_word_best_first_with_stemming(engine: Engine) -> None:
    sessions = make_session_factory(engine)
    ids = []
    with sessions.begin() as session:
        for n, caption in enumerate(["a dog on grass", "two dogs running on a beach",
                                     "a red car"]):
            row = ImageRecord(sha256=f"{n + 1:063x}f", filename=f"fts{n}.jpg", format="JPEG",
                              width=1, height=1, size_bytes=1)
            session.add(row)
            session.flush()
            session.add(Caption(image_id=row.id, text=caption, model="fts-test"))
            ids.append(row.id)
    dog, dogs_beach, car = ids
    try:
        with sessions() as session:
            found = match_captions(session, "dog beach", 10)
            assert found[:2] == [dogs_beach, dog]
            assert car not in found
            assert match_captions(session, "the of", 10) == []
            assert match_captions(session, "car' | !", 10) == [car]
            # the query's expression is the index's, so the planner can use it
            session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(session.execute(text(
                "EXPLAIN SELECT image_id FROM captions WHERE to_tsvector('english'::regconfig,"
                " text) @@ to_tsquery('english'::regconfig, 'dog')")).scalars())
            assert "ix_captions_text_fts" in plan
            indexes = session.execute(text(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_captions_text_fts'"
            )).scalar_one()
            assert "gin" in indexes and "to_tsvector" in indexes
    finally:
        with sessions.begin() as session:
            session.execute(text("DELETE FROM images WHERE id = ANY(:ids)"), {"ids": ids})


def test_postgres_finds_photos_holding_every_query_word_joined_or_split(engine: Engine
                                                                        ) -> None:
    from shared.db import ImageText
    from shared.db.fulltext import match_photo_text, photo_text_document

    sessions = make_session_factory(engine)
    ids = []
    with sessions.begin() as session:
        for n, sign in enumerate(["PLATFORM 9\nKINGS CROSS", "KINGSCROSS", "PLATFORM 4"]):
            row = ImageRecord(sha256=f"{n + 1:063x}e", filename=f"ocr{n}.jpg", format="JPEG",
                              width=1, height=1, size_bytes=1)
            session.add(row)
            session.flush()
            session.add(ImageText(image_id=row.id, model="ocr-test", text=sign,
                                  confidence=0.9, words=photo_text_document(sign)))
            ids.append(row.id)
    station, joined, other = ids
    try:
        with sessions() as session:
            assert match_photo_text(session, "platform 9 kings cross", 10) == [station]
            assert set(match_photo_text(session, "kings cross", 10)) == {station, joined}
            assert set(match_photo_text(session, "kingscross", 10)) == {station, joined}
            assert set(match_photo_text(session, "platforms", 10)) == {station, other}  # stem
            assert match_photo_text(session, "platform cafe", 10) == []
            assert match_photo_text(session, "cross' | !", 10) == [station]  # syntax: words
            session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(session.execute(text(
                "EXPLAIN SELECT image_id FROM image_texts WHERE to_tsvector("
                "'english'::regconfig, words) @@ to_tsquery('english'::regconfig, 'exit')"
            )).scalars())
            assert "ix_image_texts_words_fts" in plan
    finally:
        with sessions.begin() as session:
            session.execute(text("DELETE FROM images WHERE id = ANY(:ids)"), {"ids": ids})
        with sessions() as session:
            assert session.execute(text("SELECT count(*) FROM image_texts WHERE image_id = "
                                        "ANY(:ids)"), {"ids": ids}).scalar() == 0  # cascade
