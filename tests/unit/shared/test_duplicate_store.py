"""Near-duplicate pairs and groups in the database: joins, merges, pages, deletions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from shared.db import DuplicateMember, ImageRecord, make_engine, make_session_factory
from shared.db.duplicates import group_of_image, group_page, record_pairs
from shared.db.migrate import upgrade


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'capsearch.db'}")
    upgrade(engine)
    factory = make_session_factory(engine)
    with factory.begin() as session:
        session.add_all([ImageRecord(id=i, sha256=f"{i:064d}", format="JPEG", width=1,
                                     height=1, size_bytes=1) for i in range(1, 11)])
    yield factory
    engine.dispose()


def groups(factory: sessionmaker[Session], limit: int = 50) -> list[tuple[int, ...]]:
    with factory() as session:
        return [g.ids for g in group_page(session, after=0, limit=limit).groups]


def record(factory: sessionmaker[Session], *pairs: tuple[int, int, float]) -> None:
    with factory.begin() as session:
        record_pairs(session, list(pairs))


def test_a_new_photo_joins_the_group_of_its_match(factory: sessionmaker[Session]) -> None:
    record(factory, (1, 2, 0.9))
    record(factory, (3, 2, 0.8))
    assert groups(factory) == [(1, 2, 3)]
    with factory() as session:
        group = group_of_image(session, 3)
    assert group is not None and group.score == pytest.approx(0.8)


def test_a_photo_matching_two_groups_merges_them(factory: sessionmaker[Session]) -> None:
    record(factory, (1, 2, 0.9), (5, 6, 0.95))
    assert groups(factory) == [(1, 2), (5, 6)]
    record(factory, (7, 2, 0.85), (7, 6, 0.9))
    assert groups(factory) == [(1, 2, 5, 6, 7)]
    with factory() as session:
        assert set(session.scalars(select(DuplicateMember.group_id))) == {1}


def test_recording_the_same_pairs_again_changes_nothing(factory: sessionmaker[Session]
                                                       ) -> None:
    record(factory, (1, 2, 0.9))
    record(factory, (2, 1, 0.9), (1, 2, 0.9))
    assert groups(factory) == [(1, 2)]


def test_pages_follow_the_cursor_to_the_end(factory: sessionmaker[Session]) -> None:
    record(factory, (1, 2, 0.9), (3, 4, 0.9), (5, 6, 0.9))
    seen: list[tuple[int, ...]] = []
    after = 0
    with factory() as session:
        for _ in range(5):
            page = group_page(session, after=after, limit=2)
            seen += [g.ids for g in page.groups]
            if page.next_after is None:
                break
            after = page.next_after
    assert seen == [(1, 2), (3, 4), (5, 6)]


def test_deleting_the_link_splits_a_group_and_a_lone_photo_leaves_it(
        factory: sessionmaker[Session]) -> None:
    record(factory, (1, 2, 0.9), (2, 3, 0.9), (3, 4, 0.9))
    with factory.begin() as session:
        session.execute(delete(ImageRecord).where(ImageRecord.id == 2))
    assert groups(factory) == [(3, 4)]  # 1 lost its only partner


def test_pairs_with_a_deleted_photo_are_not_recorded(factory: sessionmaker[Session]) -> None:
    with factory.begin() as session:
        session.execute(delete(ImageRecord).where(ImageRecord.id == 9))
    record(factory, (8, 9, 0.9))
    assert groups(factory) == []
