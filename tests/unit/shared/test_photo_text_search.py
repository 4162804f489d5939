"""Text read in photos: its table, the OCR stage's bookkeeping queries and its full-text
search on SQLite (FTS5 kept in step by triggers); Postgres: tests/integration."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.db import ImageRecord, ImageStatus, ImageText, make_engine, make_session_factory
from shared.db.fulltext import match_photo_text, photo_text_document, photo_text_terms
from shared.db.migrate import upgrade
from shared.db.texts import count_ocr_waiting, ocr_waiting, texts_of, unread


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'texts.db'}")
    upgrade(engine)
    return make_session_factory(engine)


def add_images(sessions: sessionmaker[Session], n: int,
               status: ImageStatus = ImageStatus.indexed) -> list[int]:
    with sessions() as session:
        start = len(session.scalars(select(ImageRecord.id)).all()) + 1
    with sessions.begin() as session:
        rows = [ImageRecord(sha256=f"{i:064x}", filename=f"{i}.jpg", format="JPEG", width=1,
                            height=1, size_bytes=1, status=status.value)
                for i in range(start, start + n)]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def read(sessions: sessionmaker[Session], texts: dict[int, str]) -> None:
    """What the OCR stage writes for each image."""
    with sessions.begin() as session:
        session.add_all([ImageText(image_id=i, model="pp-ocrv4", text=t, confidence=0.9,
                                   words=photo_text_document(t)) for i, t in texts.items()])


def test_the_document_holds_the_words_and_each_pair_of_neighbours_joined() -> None:
    assert photo_text_document("PLATFORM 9\nKINGS CROSS") == (
        "platform 9 kings cross platform9 kingscross")  # never across lines ("9kings")
    assert photo_text_document("") == ""
    assert photo_text_document("Ｃａｆé-Bar!") == "café bar cafébar"  # NFKC, punctuation splits


def test_each_query_word_may_match_alone_or_joined_with_a_neighbour() -> None:
    assert photo_text_terms("the Kings Cross") == [["kings", "kingscross"],
                                                   ["cross", "kingscross"]]
    assert photo_text_terms("kingscross") == [["kingscross"]]
    assert photo_text_terms("of the a") == []


def test_a_photo_matches_only_when_it_holds_every_word_of_the_query(
        sessions: sessionmaker[Session]) -> None:
    sign, platform_only, cafe = add_images(sessions, 3)
    read(sessions, {sign: "PLATFORM 9\nKINGS CROSS", platform_only: "PLATFORM 4",
                    cafe: "CAFE"})
    with sessions() as session:
        assert match_photo_text(session, "platform 9 kings cross", 10) == [sign]
        assert set(match_photo_text(session, "platform", 10)) == {sign, platform_only}
        assert match_photo_text(session, "platform cafe", 10) == []  # no photo has both
        assert match_photo_text(session, "the", 10) == []
        assert match_photo_text(session, 'cafe" OR *', 10) == [cafe]  # never FTS5 syntax


def test_joined_and_split_words_find_the_sign(sessions: sessionmaker[Session]) -> None:
    spaced_sign, joined_sign = add_images(sessions, 2)
    read(sessions, {spaced_sign: "KINGS CROSS", joined_sign: "KINGSCROSS"})
    with sessions() as session:
        assert set(match_photo_text(session, "kings cross", 10)) == {spaced_sign, joined_sign}
        assert set(match_photo_text(session, "kingscross", 10)) == {spaced_sign, joined_sign}


def test_waiting_counts_indexed_images_without_a_row(sessions: sessionmaker[Session]) -> None:
    done, waiting, other = add_images(sessions, 3)
    (pending,) = add_images(sessions, 1, status=ImageStatus.pending)
    read(sessions, {done: ""})  # read, no text found: done all the same
    with sessions() as session:
        assert ocr_waiting(session) == [waiting, other]
        assert count_ocr_waiting(session) == 2
        assert unread(session, [pending, other, done, waiting, 999]) == {
            other: f"{other:064x}", waiting: f"{waiting:064x}"}
        assert list(unread(session, [other, waiting])) == [other, waiting]  # order asked


def test_waiting_since_excludes_photos_indexed_after_the_cutoff(
        sessions: sessionmaker[Session]) -> None:
    from datetime import UTC, datetime, timedelta

    old, new = add_images(sessions, 2)
    with sessions.begin() as session:
        session.execute(update(ImageRecord).where(ImageRecord.id == old).values(
            updated_at=datetime.now(UTC) - timedelta(hours=2)))
    with sessions() as session:
        cutoff = datetime.now(UTC) - timedelta(hours=1)
        assert ocr_waiting(session, changed_before=cutoff) == [old]
        assert new in ocr_waiting(session)


def test_deleting_an_image_deletes_its_text_and_its_search_entry(
        sessions: sessionmaker[Session]) -> None:
    sign, other = add_images(sessions, 2)
    read(sessions, {sign: "EXIT", other: "EXIT"})
    with sessions.begin() as session:  # the foreign key cascades
        session.execute(delete(ImageRecord).where(ImageRecord.id == sign))
    with sessions() as session:
        assert list(texts_of(session, [sign, other])) == [other]
        assert match_photo_text(session, "exit", 10) == [other]


def test_rewriting_a_text_moves_its_search_entry(sessions: sessionmaker[Session]) -> None:
    (image,) = add_images(sessions, 1)
    read(sessions, {image: "OLD SIGN"})
    with sessions.begin() as session:
        session.execute(update(ImageText).where(ImageText.image_id == image).values(
            text="NEW SIGN", words=photo_text_document("NEW SIGN")))
    with sessions() as session:
        assert match_photo_text(session, "old", 10) == []
        assert match_photo_text(session, "new sign", 10) == [image]
