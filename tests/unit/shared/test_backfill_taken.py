"""`capsearch doctor --backfill-taken`: capture dates read back from the stored originals of
photos stored before they were; idempotent, with progress, counts at the end."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from capsearch.cli import main
from shared.backfill_taken import BackfillReport, backfill_taken
from shared.db import ImageRecord, make_engine, make_session_factory
from shared.db.migrate import upgrade
from shared.db.models import aware
from shared.images import check_image
from shared.storage import LocalBlobStore, original_key
from tests.support.exif import jpeg_taken

UPDATED = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'capsearch.db'}")
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


def store_photo(factory: sessionmaker[Session], store: LocalBlobStore | None, name: str,
                data: bytes) -> int:
    """A row as an older capsearch stored it (no taken_at), and its original unless no store."""
    checked = check_image(data, max_bytes=10**6, max_pixels=10**6)
    if store is not None:
        store.put(original_key(checked.sha256), data, "image/jpeg")
    with factory.begin() as session:
        row = ImageRecord(sha256=checked.sha256, filename=name, format="JPEG", width=64,
                          height=48, size_bytes=len(data), status="indexed",
                          updated_at=UPDATED)
        session.add(row)
        session.flush()
        return row.id


def taken_of(factory: sessionmaker[Session]) -> dict[str, datetime | None]:
    with factory() as session:
        return {name: aware(t) if t else None for name, t in session.execute(
            select(ImageRecord.filename, ImageRecord.taken_at))}


@pytest.fixture
def collection(factory: sessionmaker[Session], tmp_path: Path) -> LocalBlobStore:
    store = LocalBlobStore(tmp_path / "blobs")
    for n in range(5):  # more than a batch of 2
        store_photo(factory, store, f"dated{n}.jpg",
                    jpeg_taken(f"2019:07:{10 + n:02d} 08:00:00", seed=n))
    store_photo(factory, store, "undated.jpg", jpeg_taken(None, seed=10))
    store_photo(factory, None, "lost.jpg", jpeg_taken("2019:01:01 00:00:00", seed=11))
    return store


def test_backfill_fills_dates_from_the_originals(factory: sessionmaker[Session],
                                                 collection: LocalBlobStore) -> None:
    seen: list[BackfillReport] = []
    report = backfill_taken(factory, collection, batch=2,
                            on_progress=lambda r: seen.append(BackfillReport(**r.as_dict())))
    assert report.as_dict() == {"total": 7, "read": 7, "dated": 5, "undated": 1, "missing": 1}
    assert [r.read for r in seen] == [2, 4, 6, 7]  # a line per batch
    taken = taken_of(factory)
    assert taken["dated3.jpg"] == datetime(2019, 7, 13, 8, tzinfo=UTC)
    assert taken["undated.jpg"] is None and taken["lost.jpg"] is None
    with factory() as session:  # a metadata fill is not a change the re-queue sweep sees
        assert {aware(u) for u in session.scalars(select(ImageRecord.updated_at))} == {UPDATED}


def test_backfill_is_idempotent(factory: sessionmaker[Session],
                                collection: LocalBlobStore) -> None:
    backfill_taken(factory, collection)
    first = taken_of(factory)
    again = backfill_taken(factory, collection)
    assert again.as_dict() == {"total": 2, "read": 2, "dated": 0, "undated": 1, "missing": 1}
    assert taken_of(factory) == first


def test_backfill_leaves_a_date_already_there(factory: sessionmaker[Session],
                                              collection: LocalBlobStore) -> None:
    kept = datetime(2001, 1, 1, tzinfo=UTC)
    with factory.begin() as session:
        session.get(ImageRecord, 1).taken_at = kept  # type: ignore[union-attr]
    report = backfill_taken(factory, collection)
    assert report.total == 6 and report.dated == 4
    assert taken_of(factory)["dated0.jpg"] == kept


def test_doctor_backfill_taken_prints_progress_and_counts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "instance"
    for name in [k for k in os.environ if k.startswith("CAPSEARCH_")]:
        monkeypatch.delenv(name)  # the embedded instance's defaults: SQLite, a blob folder
    data_dir.mkdir()
    engine = make_engine(f"sqlite:///{data_dir / 'capsearch.db'}")
    upgrade(engine)
    factory = make_session_factory(engine)
    store = LocalBlobStore(data_dir / "blobs")
    store_photo(factory, store, "a.jpg", jpeg_taken("2018:03:04 05:06:07", "-01:00", seed=1))
    store_photo(factory, store, "b.jpg", jpeg_taken(None, seed=2))

    assert main(["doctor", "--backfill-taken", "--data-dir", str(data_dir)]) == 0
    out, err = capsys.readouterr()
    assert "backfill-taken: 2/2 read: 1 dated" in err
    assert out.strip() == ("backfill-taken done: 2/2 read: 1 dated, 1 without a capture date, "
                           "0 originals missing")
    assert taken_of(factory)["a.jpg"] == datetime(2018, 3, 4, 6, 6, 7, tzinfo=UTC)

    assert main(["doctor", "--backfill-taken", "--data-dir", str(data_dir), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts == {"total": 1, "read": 1, "dated": 0, "undated": 1, "missing": 0}
    engine.dispose()
