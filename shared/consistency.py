"""Finding and repairing what a crash can leave between the blob store, the database and the
index (`capsearch doctor`), and re-queueing images whose caption task was lost.

Each check returns what it found; each repair is idempotent, so `doctor --repair` can run at
any time, twice, or concurrently with traffic. Blobs younger than a grace period are left
alone: an upload in flight writes its blobs a moment before its row.

    orphan_blobs            blob without a row            delete the blob
    missing_originals       row without its original      mark failed (upload it again), unindex
    missing_thumbnails      row without its thumbnail     make it again from the original
    indexed_without_vector  `indexed`, no stored vector   back to `pending`, re-queue
    vector_without_member   vector, not in the active IVF hand it to the index again
    stuck                   `pending`/`captioned` too long re-queue
    ocr_stuck               indexed, text unread too long  re-queue for OCR (stack)

Besides the checks, the report counts the indexed photos whose text is still to be read
(`ocr_waiting`): progress of the OCR stage, not a problem.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.clients import IndexWriter
from shared.db import Embedding, ImageRecord, ImageStatus, IndexVersion, Membership
from shared.db.models import aware, utcnow
from shared.db.queries import chunked, load_vectors, vectors_of
from shared.db.texts import count_ocr_waiting, ocr_waiting
from shared.errors import CapsearchError, NotFound
from shared.images import make_thumbnail
from shared.queue import CaptionQueue
from shared.storage import BlobStore, original_key, thumbnail_key

log = logging.getLogger(__name__)

Factory = sessionmaker[Session]
UNFINISHED = (ImageStatus.pending.value, ImageStatus.captioned.value)
MISSING_ORIGINAL = "the original file is missing from the blob store; upload it again"


# ---- re-queueing lost work (also run periodically by the gateway) ------------------------------


def stuck_images(factory: Factory, *, older_than_s: float, limit: int = 10_000) -> list[int]:
    """Images `pending` or `captioned` whose row has not changed for `older_than_s`."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    with factory() as session:
        return [int(i) for i in session.scalars(
            select(ImageRecord.id)
            .where(ImageRecord.status.in_(UNFINISHED), ImageRecord.updated_at < cutoff)
            .order_by(ImageRecord.id).limit(limit))]


def requeue(factory: Factory, queue: CaptionQueue, image_ids: Sequence[int]) -> list[int]:
    """Touch the rows (so the next sweep waits again) and hand the ids to the caption queue."""
    ids = [int(i) for i in image_ids]
    if not ids:
        return []
    with factory.begin() as session:
        for chunk in chunked(ids):
            session.execute(update(ImageRecord).where(ImageRecord.id.in_(chunk),
                                                      ImageRecord.status.in_(UNFINISHED))
                            .values(updated_at=utcnow()))
    queue.enqueue(ids)
    return ids


def requeue_stuck(factory: Factory, queue: CaptionQueue, *, older_than_s: float) -> list[int]:
    """Re-queue images left unfinished, but only while nothing waits in the queue: a backlog
    means their task is still coming. Duplicates are harmless (the task is idempotent)."""
    backlog: Callable[[], int | None] | None = getattr(queue, "backlog", None)
    if backlog is not None:
        waiting = backlog()
        if waiting is None or waiting > 0:
            return []
    return requeue(factory, queue, stuck_images(factory, older_than_s=older_than_s))


def requeue_unread_texts(factory: Factory, ocr_queue: CaptionQueue, *,
                         older_than_s: float) -> list[int]:
    """Send photos indexed longer than `older_than_s` whose text was never read back to the
    OCR queue, but only while it is empty (a backlog means their task is still coming)."""
    backlog: Callable[[], int | None] | None = getattr(ocr_queue, "backlog", None)
    if backlog is not None:
        waiting = backlog()
        if waiting is None or waiting > 0:
            return []
    with factory() as session:
        ids = ocr_waiting(session, changed_before=utcnow() - timedelta(seconds=older_than_s))
    if ids:
        ocr_queue.enqueue(ids)
    return ids


# ---- the doctor's checks -----------------------------------------------------------------------


def _blob_sha(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    return name.removesuffix(".jpg")


def _known_shas(factory: Factory) -> dict[str, int]:
    with factory() as session:
        return {sha: i for i, sha in session.execute(select(ImageRecord.id,
                                                            ImageRecord.sha256))}


def orphan_blobs(factory: Factory, store: BlobStore, *, grace_s: float) -> list[str]:
    """Blob keys that no image row points at, older than the grace period."""
    cutoff = utcnow() - timedelta(seconds=grace_s)
    found = [(key, at) for prefix in ("originals/", "thumbnails/")
             for key, at in store.scan(prefix)]
    known = _known_shas(factory)  # read after listing: a row committed meanwhile counts
    return [key for key, at in found if _blob_sha(key) not in known and aware(at) <= cutoff]


def missing_blobs(factory: Factory, store: BlobStore) -> tuple[list[int], list[int]]:
    """Images whose original is missing, and images whose thumbnail alone is missing."""
    originals = {_blob_sha(k) for k, _ in store.scan("originals/")}
    thumbnails = {_blob_sha(k) for k, _ in store.scan("thumbnails/")}
    known = _known_shas(factory)
    no_original = sorted(i for sha, i in known.items() if sha not in originals)
    no_thumbnail = sorted(i for sha, i in known.items()
                          if sha in originals and sha not in thumbnails)
    return no_original, no_thumbnail


def indexed_without_vector(factory: Factory, *, model: str) -> list[int]:
    with factory() as session:
        stmt = (select(ImageRecord.id)
                .outerjoin(Embedding, and_(Embedding.image_id == ImageRecord.id,
                                           *vectors_of(model)))
                .where(ImageRecord.status == ImageStatus.indexed.value,
                       Embedding.image_id.is_(None))
                .order_by(ImageRecord.id))
        return [int(i) for i in session.scalars(stmt)]


def vectors_without_membership(factory: Factory, *, model: str) -> list[int]:
    """Indexed images with a vector but no membership in the active IVF version (none exact)."""
    with factory() as session:
        version = session.scalar(select(IndexVersion.id).where(IndexVersion.active.is_(True),
                                                                IndexVersion.embedding_model
                                                                == model))
        if version is None:
            return []
        stmt = (select(Embedding.image_id)
                .join(ImageRecord, ImageRecord.id == Embedding.image_id)
                .outerjoin(Membership, and_(Membership.image_id == Embedding.image_id,
                                            Membership.index_version_id == version))
                .where(*vectors_of(model), ImageRecord.status == ImageStatus.indexed.value,
                       Membership.image_id.is_(None))
                .order_by(Embedding.image_id))
        return [int(i) for i in session.scalars(stmt)]


# ---- repairs -----------------------------------------------------------------------------------


def delete_blobs(store: BlobStore, keys: Sequence[str]) -> int:
    for key in keys:
        store.delete(key)
    return len(keys)


def fail_missing_originals(factory: Factory, image_ids: Sequence[int],
                           index: IndexWriter | None) -> int:
    """Mark images whose bytes are gone `failed` (a re-upload restores them) and unindex them."""
    ids = [int(i) for i in image_ids]
    if not ids:
        return 0
    if index is not None:
        try:
            index.remove(ids)
        except NotFound:
            pass
    with factory.begin() as session:
        for chunk in chunked(ids):
            session.execute(update(ImageRecord).where(ImageRecord.id.in_(chunk))
                            .values(status=ImageStatus.failed.value, error=MISSING_ORIGINAL))
    return len(ids)


def remake_thumbnails(factory: Factory, store: BlobStore, image_ids: Sequence[int], *,
                      max_px: int) -> int:
    done = 0
    with factory() as session:
        shas = dict(session.execute(select(ImageRecord.id, ImageRecord.sha256)
                                    .where(ImageRecord.id.in_(list(image_ids)))).tuples().all())
    for image_id, sha in shas.items():
        try:
            thumb = make_thumbnail(store.get(original_key(sha)), max_px)
        except (NotFound, OSError, ValueError) as exc:
            log.warning("cannot remake the thumbnail of image %d: %s", image_id, exc)
            continue
        store.put(thumbnail_key(sha), thumb, "image/jpeg")
        done += 1
    return done


def reset_to_pending(factory: Factory, image_ids: Sequence[int]) -> list[int]:
    ids = [int(i) for i in image_ids]
    with factory.begin() as session:
        for chunk in chunked(ids):
            session.execute(update(ImageRecord).where(ImageRecord.id.in_(chunk))
                            .values(status=ImageStatus.pending.value, error=None))
    return ids


def reindex_vectors(factory: Factory, index: IndexWriter, image_ids: Sequence[int], *,
                    model: str, batch: int = 500) -> int:
    """Hand stored vectors to the index again (it assigns clusters and writes memberships)."""
    ids = [int(i) for i in image_ids]
    done = 0
    for chunk in chunked(ids, batch):
        with factory() as session:
            found = load_vectors(session, chunk, model=model)
        if not found:
            continue
        index.add(list(found), np.stack(list(found.values())))
        done += len(found)
    return done


# ---- the whole examination ---------------------------------------------------------------------


@dataclass
class CheckResult:
    name: str
    found: int
    repaired: int = 0
    sample: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class DoctorReport:
    checks: list[CheckResult] = field(default_factory=list)
    ocr_waiting: int | None = None  # indexed photos whose text is still to be read

    @property
    def problems(self) -> int:
        return sum(c.found - c.repaired for c in self.checks) + sum(
            1 for c in self.checks if c.error)

    def as_dict(self) -> dict[str, dict[str, object]]:
        return {c.name: {"found": c.found, "repaired": c.repaired, "sample": c.sample,
                         "error": c.error} for c in self.checks}


@dataclass
class DoctorDeps:
    factory: Factory
    store: BlobStore
    model: str
    thumbnail_px: int
    queue: CaptionQueue | None = None  # None: cannot re-queue from here (embedded mode)
    index: IndexWriter | None = None  # None: cannot reach the search service
    ocr: bool = False  # the OCR stage is on: count and check photos waiting for it
    ocr_queue: CaptionQueue | None = None  # its queue (stack); None: cannot re-queue


def examine(deps: DoctorDeps, *, repair: bool, grace_s: float, stuck_after_s: float
            ) -> DoctorReport:
    """Run every check (and, with `repair`, every repair); one failing check does not stop
    the others."""
    report = DoctorReport()

    def run(name: str, find: Callable[[], Sequence[object]],
            fix: Callable[[list[object]], int] | None) -> None:
        result = CheckResult(name=name, found=0)
        report.checks.append(result)
        try:
            items = list(find())
            result.found = len(items)
            result.sample = [str(i) for i in items[:10]]
            if repair and items and fix is not None:
                result.repaired = fix(items)
        except (CapsearchError, OSError) as exc:
            result.error = getattr(exc, "message", None) or str(exc)
        except Exception as exc:  # a database error: say which check, keep going
            result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        if result.error:
            log.warning("doctor check %s failed: %s", name, result.error)

    def requeue_fix(ids: list[object]) -> int:
        if deps.queue is None:
            return 0
        return len(requeue(deps.factory, deps.queue, [int(str(i)) for i in ids]))

    run("orphan_blobs", lambda: orphan_blobs(deps.factory, deps.store, grace_s=grace_s),
        lambda keys: delete_blobs(deps.store, [str(k) for k in keys]))
    missing: dict[str, list[int]] = {}

    def find_missing(kind: int) -> list[int]:
        if not missing:
            missing["o"], missing["t"] = missing_blobs(deps.factory, deps.store)
        return missing["o" if kind == 0 else "t"]

    run("missing_originals", lambda: find_missing(0),
        lambda ids: fail_missing_originals(deps.factory, [int(str(i)) for i in ids],
                                           deps.index))
    run("missing_thumbnails", lambda: find_missing(1),
        lambda ids: remake_thumbnails(deps.factory, deps.store, [int(str(i)) for i in ids],
                                      max_px=deps.thumbnail_px))

    def requeue_unindexed(ids: list[object]) -> int:
        reset_to_pending(deps.factory, [int(str(i)) for i in ids])
        return requeue_fix(ids) if deps.queue is not None else len(ids)

    run("indexed_without_vector", lambda: indexed_without_vector(deps.factory,
                                                                 model=deps.model),
        requeue_unindexed)
    run("vector_without_membership",
        lambda: vectors_without_membership(deps.factory, model=deps.model),
        None if deps.index is None else
        lambda ids: reindex_vectors(deps.factory, deps.index,  # type: ignore[arg-type]
                                    [int(str(i)) for i in ids], model=deps.model))
    run("stuck", lambda: stuck_images(deps.factory, older_than_s=stuck_after_s),
        requeue_fix if deps.queue is not None else None)
    if deps.ocr:
        _examine_ocr(deps, report, run, stuck_after_s)
    return report


def _examine_ocr(deps: DoctorDeps, report: DoctorReport,
                 run: Callable[..., None], stuck_after_s: float) -> None:
    """The OCR stage's progress, and its photos indexed long ago but still unread (a task
    lost with its worker, or photos indexed before the stage existed)."""
    try:
        with deps.factory() as session:
            report.ocr_waiting = count_ocr_waiting(session)
    except Exception as exc:
        log.warning("counting photos waiting for OCR failed: %s", type(exc).__name__)

    def find() -> list[int]:
        with deps.factory() as session:
            return ocr_waiting(session, changed_before=utcnow() - timedelta(
                seconds=stuck_after_s))

    def fix(ids: list[object]) -> int:
        assert deps.ocr_queue is not None
        deps.ocr_queue.enqueue([int(str(i)) for i in ids])
        return len(ids)

    run("ocr_stuck", find, fix if deps.ocr_queue is not None else None)
