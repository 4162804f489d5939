"""Ingest: check every uploaded file, store new originals + thumbnails, write rows, enqueue.

Order matters: nothing is stored unless every file is good; blobs are durable before the row
that points at them; a row is enqueued only once committed; a failed enqueue marks the rows
`failed`, so a re-upload (which resets `failed` images) retries them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Protocol, TypeVar

import anyio
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.gateway.images import status_url
from shared.config import Settings
from shared.db import ImageRecord, ImageStatus
from shared.devices import cpu_streams
from shared.errors import (
    BadRequest,
    CapsearchError,
    DependencyUnavailable,
    PayloadTooLarge,
    ValidationFailed,
)
from shared.images import CONTENT_TYPES, CheckedImage, check_with_thumbnail
from shared.queue import CaptionQueue
from shared.schemas import UploadItem, UploadResponse
from shared.storage import BlobStore, original_key, thumbnail_key

log = logging.getLogger(__name__)

Factory = sessionmaker[Session]
T = TypeVar("T")
R = TypeVar("R")
MAX_DEFAULT_CONCURRENCY = 4


class UploadSource(Protocol):
    """An uploaded file that can be re-read (FastAPI's UploadFile is one)."""

    filename: str | None

    async def read(self, size: int = -1) -> bytes: ...

    async def seek(self, offset: int) -> None: ...


@dataclass(frozen=True)
class CheckedUpload:
    """An upload that decodes as an allowed image within the caps (its bytes stay spooled)."""

    upload: UploadSource
    name: str  # for messages: the filename, or its position when it has none
    filename: str
    sha256: str
    format: str
    width: int
    height: int
    size_bytes: int
    thumbnail: bytes
    taken_at: datetime | None = None  # EXIF capture date, read by the check


@dataclass(frozen=True)
class Stored:
    id: int
    status: str
    duplicate: bool


def printable(text: str) -> str:
    """Without control characters or lone surrogates (Postgres refuses NUL in text)."""
    return "".join(ch for ch in text if ch.isprintable()).strip()


def clean_filename(name: str | None) -> str:
    """The client's base name only, printable, bounded to fit the column."""
    return printable((name or "").replace("\\", "/").rsplit("/", 1)[-1])[:255]


def clean_source(source: str) -> str:
    return printable(source)[:1024] or "upload"


async def read_capped(upload: UploadSource, *, name: str, max_bytes: int) -> bytes:
    """The whole file, reading at most max_bytes + 1 so an oversized one is never buffered."""
    await upload.seek(0)
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{name}: the file is larger than the limit of {max_bytes} bytes")
    return data


def check_named(data: bytes, *, name: str, settings: Settings) -> tuple[CheckedImage, bytes]:
    """check_image + a thumbnail, from one decode; errors name the file. Returns the checked
    image and its thumbnail."""
    try:
        return check_with_thumbnail(data, max_bytes=settings.max_upload_bytes,
                                    max_pixels=settings.max_pixels,
                                    thumbnail_px=settings.thumbnail_px)
    except CapsearchError as exc:
        raise type(exc)(f"{name}: {exc.message}", code=exc.code) from None


def upload_concurrency(settings: Settings) -> int:
    """Files of one request checked at a time: the setting, else the usable cores (at most 4)."""
    return settings.upload_concurrency or min(MAX_DEFAULT_CONCURRENCY, cpu_streams())


async def in_order(items: Sequence[T], fn: Callable[[int, T], Awaitable[R]], limit: int
                   ) -> list[R]:
    """`fn(position, item)` for every item, at most `limit` at a time (started in item
    order), the results in item order. After a failure no further item starts (a request
    with a bad file is not decoded to its end); the calls in flight run to their end, then the
    first failure in item order is raised, so an error names the same file whatever finished
    first (every item before it has started)."""
    results: list[R | None] = [None] * len(items)
    errors: list[BaseException | None] = [None] * len(items)
    gate = anyio.Semaphore(max(1, limit))
    failed = False

    async def run(position: int, item: T) -> None:
        nonlocal failed
        async with gate:
            if failed:
                return
            try:
                results[position] = await fn(position, item)
            except Exception as exc:  # raised below, in item order
                errors[position] = exc
                failed = True

    async with anyio.create_task_group() as tasks:
        for position, item in enumerate(items):
            tasks.start_soon(run, position, item)
    for error in errors:
        if error is not None:
            raise error
    return results  # type: ignore[return-value]


async def validate_uploads(*, uploads: Sequence[UploadSource], settings: Settings
                           ) -> list[CheckedUpload]:
    """Check every file, `upload_concurrency` at a time (decoding in the thread pool releases
    the GIL, so one request uses several cores); the first bad one raises, naming it."""
    if not uploads:
        raise ValidationFailed("files: at least one file is required")
    if len(uploads) > settings.max_files_per_request:
        raise BadRequest(f"files: {len(uploads)} files; the limit is "
                         f"{settings.max_files_per_request} per request", code="too_many_files")

    async def check(index: int, upload: UploadSource) -> CheckedUpload:
        filename = clean_filename(upload.filename)
        name = filename or f"file #{index + 1}"
        data = await read_capped(upload, name=name, max_bytes=settings.max_upload_bytes)
        image, thumb = await anyio.to_thread.run_sync(
            partial(check_named, data, name=name, settings=settings))
        return CheckedUpload(upload=upload, name=name, filename=filename, sha256=image.sha256,
                             format=image.format, width=image.width, height=image.height,
                             size_bytes=len(data), thumbnail=thumb, taken_at=image.taken_at)

    return await in_order(uploads, check, upload_concurrency(settings))


# ---- blocking steps (run in the thread pool) ---------------------------------------------------


def find_existing(factory: Factory, shas: Sequence[str]) -> dict[str, Stored]:
    with factory() as session:
        rows = session.execute(select(ImageRecord.sha256, ImageRecord.id, ImageRecord.status)
                               .where(ImageRecord.sha256.in_(list(shas))))
        return {sha: Stored(id=i, status=status, duplicate=True) for sha, i, status in rows}


def put_blobs(store: BlobStore, item: CheckedUpload, data: bytes) -> None:
    store.put(original_key(item.sha256), data, CONTENT_TYPES[item.format])
    store.put(thumbnail_key(item.sha256), item.thumbnail, "image/jpeg")


def _row(item: CheckedUpload, source: str) -> ImageRecord:
    return ImageRecord(sha256=item.sha256, filename=item.filename, source=source,
                       format=item.format, width=item.width, height=item.height,
                       size_bytes=item.size_bytes, taken_at=item.taken_at,
                       status=ImageStatus.pending.value)


def insert_rows(factory: Factory, items: Sequence[CheckedUpload], source: str
                ) -> dict[str, Stored]:
    """Insert pending rows in one transaction; on a sha256 race, row by row (loser = duplicate)."""
    try:
        with factory() as session, session.begin():
            rows = [_row(item, source) for item in items]
            session.add_all(rows)
            session.flush()
            out = {r.sha256: Stored(id=r.id, status=r.status, duplicate=False) for r in rows}
        return out
    except IntegrityError:
        log.info("concurrent upload of the same bytes; inserting row by row")
    out = {}
    for item in items:
        try:
            with factory() as session, session.begin():
                row = _row(item, source)
                session.add(row)
                session.flush()
                out[item.sha256] = Stored(id=row.id, status=row.status, duplicate=False)
        except IntegrityError:
            winner = find_existing(factory, [item.sha256]).get(item.sha256)
            if winner is None:  # some other constraint failed
                raise
            out[item.sha256] = winner
    return out


def discard_orphans(factory: Factory, store: BlobStore, shas: Sequence[str]) -> None:
    """Delete the blobs of shas that no row points at (after a failed insert)."""
    try:
        owned = set(find_existing(factory, shas))
    except Exception:  # the database is what failed; a concurrent owner is very unlikely
        owned = set()
    for sha in set(shas) - owned:
        for key in (original_key(sha), thumbnail_key(sha)):
            try:
                store.delete(key)
            except Exception as exc:
                log.warning("could not delete orphan blob %s: %s", key, exc)


def reset_failed(factory: Factory, ids: Sequence[int]) -> list[int]:
    """Put `failed` images back to `pending` for another try; the ids actually reset."""
    if not ids:
        return []
    with factory() as session, session.begin():
        result = session.execute(
            update(ImageRecord)
            .where(ImageRecord.id.in_(list(ids)), ImageRecord.status == ImageStatus.failed.value)
            .values(status=ImageStatus.pending.value, error=None, attempts=0)
            .returning(ImageRecord.id))
        return [int(i) for i in result.scalars()]


def mark_failed(factory: Factory, ids: Sequence[int], reason: str) -> None:
    with factory() as session, session.begin():
        session.execute(update(ImageRecord).where(ImageRecord.id.in_(list(ids)))
                        .values(status=ImageStatus.failed.value, error=reason))


# ---- the pipeline ------------------------------------------------------------------------------


async def store_new(*, items: Sequence[CheckedUpload], source: str, settings: Settings,
                    factory: Factory, store: BlobStore) -> dict[str, Stored]:
    """Blobs first, then rows; if anything fails, no blob is left without a row. One file at
    a time on purpose: with several puts in flight, a blob store dying mid-request leaves the
    others hanging until their read timeout (the request then answers after it, not at the
    first failure), and a put abandoned to answer sooner could land after the clean-up."""
    try:
        for item in items:
            data = await read_capped(item.upload, name=item.name,
                                     max_bytes=settings.max_upload_bytes)
            await anyio.to_thread.run_sync(put_blobs, store, item, data)
        return await anyio.to_thread.run_sync(insert_rows, factory, items, source)
    except Exception:
        await anyio.to_thread.run_sync(discard_orphans, factory, store,
                                       [item.sha256 for item in items])
        raise


async def rewrite_failed_blobs(*, outcome: dict[str, Stored], first: dict[str, CheckedUpload],
                               settings: Settings, store: BlobStore) -> None:
    """Before a failed image is retried, put its blobs again: they may be what failed (the
    doctor marks an image whose original went missing failed; its re-upload heals it)."""
    for sha, stored in outcome.items():
        if stored.duplicate and stored.status == ImageStatus.failed.value and sha in first:
            item = first[sha]
            data = await read_capped(item.upload, name=item.name,
                                     max_bytes=settings.max_upload_bytes)
            await anyio.to_thread.run_sync(put_blobs, store, item, data)


async def enqueue(*, ids: Sequence[int], factory: Factory, queue: CaptionQueue) -> None:
    """Hand ids to captioning; if the queue refuses, mark them failed so a re-upload retries."""
    if not ids:
        return
    try:
        await anyio.to_thread.run_sync(queue.enqueue, list(ids))
    except Exception as exc:
        reason = f"could not enqueue for captioning: {exc}"
        try:
            await anyio.to_thread.run_sync(mark_failed, factory, ids, reason)
        except Exception:
            log.exception("could not mark images %s failed", list(ids))
        if isinstance(exc, CapsearchError):
            raise
        raise DependencyUnavailable(f"the caption queue is unavailable: {exc}") from exc


async def ingest_uploads(*, uploads: Sequence[UploadSource], source: str, settings: Settings,
                         factory: Factory, store: BlobStore, queue: CaptionQueue
                         ) -> UploadResponse:
    """Check all, dedupe by sha256, store the new ones, enqueue them; one item per upload."""
    checked = await validate_uploads(uploads=uploads, settings=settings)
    return await ingest_checked(checked=checked, source=source, settings=settings,
                                factory=factory, store=store, queue=queue)


async def ingest_checked(*, checked: Sequence[CheckedUpload], source: str, settings: Settings,
                         factory: Factory, store: BlobStore, queue: CaptionQueue
                         ) -> UploadResponse:
    """Dedupe checked uploads by sha256, store the new ones, enqueue them (bulk imports too)."""
    source = clean_source(source)
    first: dict[str, CheckedUpload] = {}
    for item in checked:
        first.setdefault(item.sha256, item)
    outcome = await anyio.to_thread.run_sync(find_existing, factory, list(first))
    new = [item for sha, item in first.items() if sha not in outcome]
    if new:
        outcome |= await store_new(items=new, source=source, settings=settings,
                                   factory=factory, store=store)
    was_failed = [s.id for s in outcome.values() if s.status == ImageStatus.failed.value]
    await rewrite_failed_blobs(outcome=outcome, first=first, settings=settings, store=store)
    retried = set(await anyio.to_thread.run_sync(reset_failed, factory, was_failed))
    fresh = [s.id for s in outcome.values() if not s.duplicate]
    await enqueue(ids=fresh + sorted(retried), factory=factory, queue=queue)

    items, seen = [], set()
    for item in checked:
        stored = outcome[item.sha256]
        status = ImageStatus.pending.value if stored.id in retried else stored.status
        items.append(UploadItem(id=stored.id, filename=item.filename, status=status,
                                duplicate=stored.duplicate or item.sha256 in seen,
                                status_url=status_url(stored.id)))
        seen.add(item.sha256)
    return UploadResponse(images=items)
