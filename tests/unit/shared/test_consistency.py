"""`capsearch doctor`'s checks and repairs, and the re-queueing of lost caption work."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.consistency import (
    MISSING_ORIGINAL,
    DoctorDeps,
    examine,
    requeue_stuck,
    requeue_unread_texts,
    stuck_images,
)
from shared.db import (
    Embedding,
    ImageRecord,
    IndexVersion,
    Membership,
    make_engine,
    make_session_factory,
)
from shared.db.migrate import upgrade
from shared.db.models import utcnow
from shared.schemas import IndexChangeResponse
from shared.storage import LocalBlobStore, original_key, thumbnail_key
from shared.vectors import to_bytes

MODEL = "test-model"


@dataclass
class FakeQueue:
    waiting: int | None = 0
    batches: list[list[int]] = field(default_factory=list)

    def enqueue(self, image_ids: Sequence[int]) -> None:
        self.batches.append(list(image_ids))

    def backlog(self) -> int | None:
        return self.waiting


@dataclass
class FakeIndex:
    added: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)

    def add(self, image_ids: Sequence[int], vectors: np.ndarray) -> IndexChangeResponse:
        assert vectors.shape[0] == len(image_ids)
        self.added.extend(image_ids)
        return IndexChangeResponse(count=len(image_ids), size=len(self.added))

    def remove(self, image_ids: Sequence[int]) -> IndexChangeResponse:
        self.removed.extend(image_ids)
        return IndexChangeResponse(count=len(image_ids), size=0)


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((32, 32), 30 + seed).convert("RGB").save(out, format="JPEG")
    return out.getvalue()


def add_image(factory: sessionmaker[Session], store: LocalBlobStore, image_id: int, *,
              status: str = "indexed", blobs: bool = True, vector: bool = True) -> str:
    sha = f"{image_id:064x}"
    with factory.begin() as session:
        session.execute(insert(ImageRecord.__table__).values(
            id=image_id, sha256=sha, filename=f"{image_id}.jpg", source="t", format="JPEG",
            width=32, height=32, size_bytes=10, status=status, attempts=0,
            created_at=utcnow(), updated_at=utcnow()))
        if vector:
            session.execute(insert(Embedding.__table__).values(
                image_id=image_id, kind="caption", model=MODEL, dim=4,
                vector=to_bytes(np.ones(4, dtype=np.float32) / 2), created_at=utcnow()))
    if blobs:
        store.put(original_key(sha), jpeg(image_id))
        store.put(thumbnail_key(sha), b"thumb")
    return sha


def deps(factory: sessionmaker[Session], store: LocalBlobStore, queue: FakeQueue | None = None,
         index: FakeIndex | None = None) -> DoctorDeps:
    return DoctorDeps(factory=factory, store=store, model=MODEL, thumbnail_px=16,
                      queue=queue, index=index)


def found(report: object) -> dict[str, int]:
    return {c.name: c.found for c in report.checks}  # type: ignore[attr-defined]


def age(factory: sessionmaker[Session], seconds: float) -> None:
    with factory.begin() as session:
        session.execute(update(ImageRecord).values(
            updated_at=utcnow() - timedelta(seconds=seconds)))


def test_a_consistent_instance_has_nothing_to_report(factory, store) -> None:  # type: ignore[no-untyped-def]
    for i in (1, 2):
        add_image(factory, store, i)
    report = examine(deps(factory, store), repair=False, grace_s=0, stuck_after_s=60)
    assert set(found(report).values()) == {0} and report.problems == 0


def test_blob_without_row_is_found_and_deleted(factory, store) -> None:  # type: ignore[no-untyped-def]
    add_image(factory, store, 1)
    store.put(original_key("ab" * 32), b"orphan")
    store.put(thumbnail_key("ab" * 32), b"orphan")
    report = examine(deps(factory, store), repair=True, grace_s=0, stuck_after_s=60)
    assert found(report)["orphan_blobs"] == 2
    assert not store.exists(original_key("ab" * 32))
    assert store.exists(original_key(f"{1:064x}"))  # the good one stays


def test_a_young_orphan_is_left_for_its_upload_to_finish(factory, store) -> None:  # type: ignore[no-untyped-def]
    store.put(original_key("cd" * 32), b"in flight")
    report = examine(deps(factory, store), repair=True, grace_s=3600, stuck_after_s=60)
    assert found(report)["orphan_blobs"] == 0 and store.exists(original_key("cd" * 32))


def test_row_without_original_is_marked_failed_and_unindexed(factory, store) -> None:  # type: ignore[no-untyped-def]
    sha = add_image(factory, store, 7)
    store.delete(original_key(sha))
    index = FakeIndex()
    report = examine(deps(factory, store, index=index), repair=True, grace_s=0,
                     stuck_after_s=60)
    assert found(report)["missing_originals"] == 1
    with factory() as session:
        row = session.get(ImageRecord, 7)
    assert row is not None and row.status == "failed" and row.error == MISSING_ORIGINAL
    assert index.removed == [7]


def test_missing_thumbnail_is_made_again(factory, store) -> None:  # type: ignore[no-untyped-def]
    sha = add_image(factory, store, 3)
    store.delete(thumbnail_key(sha))
    report = examine(deps(factory, store), repair=True, grace_s=0, stuck_after_s=60)
    assert found(report)["missing_thumbnails"] == 1
    assert Image.open(io.BytesIO(store.get(thumbnail_key(sha)))).format == "JPEG"


def test_indexed_without_vector_goes_back_to_pending_and_is_requeued(factory, store) -> None:  # type: ignore[no-untyped-def]
    add_image(factory, store, 4, vector=False)
    queue = FakeQueue()
    report = examine(deps(factory, store, queue=queue), repair=True, grace_s=0,
                     stuck_after_s=60)
    assert found(report)["indexed_without_vector"] == 1
    assert queue.batches == [[4]]
    with factory() as session:
        assert session.scalar(select(ImageRecord.status).where(ImageRecord.id == 4)) == \
            "pending"


def test_vector_without_membership_is_handed_to_the_index(factory, store) -> None:  # type: ignore[no-untyped-def]
    for i in (1, 2, 3):
        add_image(factory, store, i)
    with factory.begin() as session:
        session.execute(insert(IndexVersion.__table__).values(
            id=1, status="ready", active=True, embedding_kind="caption", embedding_model=MODEL,
            dim=4, n_vectors=3, n_clusters=1, pca_components=2, created_at=utcnow()))
        session.execute(insert(Membership.__table__).values(
            index_version_id=1, image_id=1, cluster_id=0))
    index = FakeIndex()
    report = examine(deps(factory, store, index=index), repair=True, grace_s=0,
                     stuck_after_s=60)
    assert found(report)["vector_without_membership"] == 2
    assert sorted(index.added) == [2, 3]


def test_stuck_pending_images_are_requeued_only_when_old(factory, store) -> None:  # type: ignore[no-untyped-def]
    add_image(factory, store, 5, status="pending", vector=False)
    add_image(factory, store, 6, status="captioned")
    add_image(factory, store, 8, status="indexed")
    queue = FakeQueue()
    assert requeue_stuck(factory, queue, older_than_s=60) == []
    age(factory, 120)
    assert requeue_stuck(factory, queue, older_than_s=60) == [5, 6]
    assert queue.batches == [[5, 6]]
    # re-queueing touched the rows: the next sweep waits for them again
    assert stuck_images(factory, older_than_s=60) == []


@pytest.mark.parametrize("waiting", [3, None])
def test_no_requeue_while_tasks_wait_or_the_broker_is_down(factory, store,  # type: ignore[no-untyped-def]
                                                          waiting: int | None) -> None:
    add_image(factory, store, 5, status="pending")
    age(factory, 120)
    queue = FakeQueue(waiting=waiting)
    assert requeue_stuck(factory, queue, older_than_s=60) == []
    assert queue.batches == []


def test_without_repair_nothing_changes(factory, store) -> None:  # type: ignore[no-untyped-def]
    store.put(original_key("ef" * 32), b"orphan")
    add_image(factory, store, 9, vector=False)
    report = examine(deps(factory, store, queue=FakeQueue()), repair=False, grace_s=0,
                     stuck_after_s=60)
    assert report.problems == 2
    assert store.exists(original_key("ef" * 32))


def test_doctor_command_exits_1_on_problems_and_0_after_repair(factory, store,  # type: ignore[no-untyped-def]
                                                               tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    import json

    from capsearch.cli import main

    home = tmp_path / "home"
    data = ["--data-dir", str(home), "--grace", "0"]
    assert main(["doctor", "--json", *data]) == 0
    blobs = LocalBlobStore(home / "blobs")
    blobs.put(original_key("aa" * 32), b"orphan")
    capsys.readouterr()
    assert main(["doctor", "--json", *data]) == 1
    assert json.loads(capsys.readouterr().out)["orphan_blobs"]["found"] == 1
    assert main(["doctor", "--repair", *data]) == 0
    assert main(["doctor", *data]) == 0


def test_doctor_counts_photos_waiting_for_ocr_and_requeues_the_stuck(
        factory: sessionmaker[Session], store: LocalBlobStore) -> None:
    add_image(factory, store, 1)
    age(factory, 7200)  # indexed two hours ago, its text never read (a lost OCR task)
    add_image(factory, store, 2)  # indexed just now: its OCR task is still coming
    ocr_queue = FakeQueue()
    doctor = DoctorDeps(factory=factory, store=store, model=MODEL, thumbnail_px=16,
                        ocr=True, ocr_queue=ocr_queue)
    report = examine(doctor, repair=True, grace_s=0, stuck_after_s=3600)
    assert report.ocr_waiting == 2  # progress, not a problem
    assert found(report)["ocr_stuck"] == 1
    assert ocr_queue.batches == [[1]]
    assert examine(deps(factory, store), repair=False, grace_s=0,
                   stuck_after_s=3600).ocr_waiting is None  # OCR off: not counted


def test_photos_whose_text_was_never_read_are_requeued_once_the_ocr_queue_drained(
        factory: sessionmaker[Session], store: LocalBlobStore) -> None:
    add_image(factory, store, 1)
    age(factory, 7200)
    add_image(factory, store, 2)  # indexed just now: its OCR task is still coming
    busy = FakeQueue(waiting=3)
    assert requeue_unread_texts(factory, busy, older_than_s=600) == []
    assert busy.batches == []
    drained = FakeQueue(waiting=0)
    assert requeue_unread_texts(factory, drained, older_than_s=600) == [1]
    assert drained.batches == [[1]]


def test_doctor_command_prints_how_many_photos_wait_for_ocr(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from capsearch.cli import main

    assert main(["doctor", "--data-dir", str(tmp_path / "home"), "--grace", "0"]) == 0
    assert "photos waiting for OCR (text in photos): 0" in capsys.readouterr().out
