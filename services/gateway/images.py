"""Images once stored: describe, list, look up, read their blobs, delete; their sources."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from services.gateway.filters import ImageFilters
from shared.clients import IndexClient
from shared.db import Caption, Embedding, ImageRecord, ImageStatus, Membership
from shared.db.duplicates import forget as forget_duplicates
from shared.db.models import aware
from shared.db.queries import latest_caption
from shared.db.texts import ImageText, texts_of
from shared.errors import CapsearchError, NotFound
from shared.images import CONTENT_TYPES
from shared.schemas import ImageLookupResult, ImagePage, ImagePublic, SourceCount
from shared.storage import BlobStore, original_key, thumbnail_key

log = logging.getLogger(__name__)

BlobKind = Literal["original", "thumbnail"]
ListSort = Literal["date", "taken"]  # newest upload first | newest capture first
# originals and thumbnails are immutable under their content address
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"


def status_url(image_id: int) -> str:
    return f"/v1/images/{image_id}"


def content_url(image_id: int) -> str:
    return f"/v1/images/{image_id}/content"


def thumbnail_url(image_id: int) -> str:
    return f"/v1/images/{image_id}/thumbnail"


def image_public(image: ImageRecord, caption: str | None,
                 text: ImageText | None = None) -> ImagePublic:
    return ImagePublic(
        id=image.id,
        sha256=image.sha256,
        status=image.status,
        error=image.error,
        caption=caption,
        ocr_text=text.text if text is not None else None,
        ocr_confidence=text.confidence if text is not None else None,
        filename=image.filename,
        source=image.source,
        format=image.format,
        width=image.width,
        height=image.height,
        size_bytes=image.size_bytes,
        created_at=aware(image.created_at),
        taken_at=aware(image.taken_at) if image.taken_at is not None else None,
        updated_at=aware(image.updated_at),
        content_url=content_url(image.id),
        thumbnail_url=thumbnail_url(image.id),
        status_url=status_url(image.id),
    )


def describe_image(*, session: Session, image: ImageRecord) -> ImagePublic:
    """The public view of one image, with its latest caption and the text read in it."""
    caption = session.scalar(select(latest_caption()).where(ImageRecord.id == image.id))
    return image_public(image, caption, texts_of(session, [image.id]).get(image.id))


def lookup_images(*, session: Session, image_ids: Sequence[int]) -> ImageLookupResult:
    """Many images' records with their latest captions in one statement, in the order asked;
    what a client polling an ingest reads instead of one request per image."""
    wanted = list(dict.fromkeys(image_ids))
    texts = texts_of(session, wanted)
    found = {image.id: image_public(image, caption, texts.get(image.id))
             for image, caption in session.execute(
                 select(ImageRecord, latest_caption()).where(ImageRecord.id.in_(wanted)))}
    return ImageLookupResult(images=[found[i] for i in wanted if i in found],
                             missing=[i for i in wanted if i not in found])


def list_order(sort: ListSort) -> list[ColumnElement[Any]]:
    """`date`: newest upload first; `taken`: newest capture first, undated after (NULLS LAST
    spelled out: Postgres puts NULLs first in a descending order, SQLite last)."""
    if sort == "taken":
        return [ImageRecord.taken_at.desc().nulls_last(), ImageRecord.id.desc()]
    return [ImageRecord.id.desc()]


def list_images(*, session: Session, status: ImageStatus | None, limit: int, offset: int,
                filters: ImageFilters | None = None, sort: ListSort = "date") -> ImagePage:
    """A page of images, newest first, optionally of one status and within filters."""
    where = [] if status is None else [ImageRecord.status == status.value]
    where += filters.clauses() if filters is not None else []
    total = session.scalar(select(func.count()).select_from(ImageRecord).where(*where)) or 0
    rows = session.execute(
        select(ImageRecord, latest_caption()).where(*where).order_by(*list_order(sort))
        .limit(limit).offset(offset)
    ).all()
    next_offset = offset + len(rows) if offset + len(rows) < total else None
    texts = texts_of(session, [image.id for image, _ in rows])
    return ImagePage(images=[image_public(image, caption, texts.get(image.id))
                             for image, caption in rows],
                     total=total, limit=limit, offset=offset, next_offset=next_offset)


def list_sources(session: Session, limit: int) -> list[SourceCount]:
    """The folders/sources images came from, with how many each (for a filter menu)."""
    rows = session.execute(
        select(ImageRecord.source, func.count()).group_by(ImageRecord.source)
        .order_by(ImageRecord.source).limit(limit))
    return [SourceCount(source=source, images=int(count)) for source, count in rows]


@dataclass(frozen=True)
class Blob:
    data: bytes
    content_type: str
    etag: str
    cache_control: str = IMMUTABLE_CACHE


def read_blob(*, store: BlobStore, image: ImageRecord, kind: BlobKind) -> Blob:
    """The original (its own type, ETag = sha256) or the JPEG thumbnail of an image."""
    if kind == "original":
        data = store.get(original_key(image.sha256))
        ctype = CONTENT_TYPES.get(image.format, "application/octet-stream")
        return Blob(data=data, content_type=ctype, etag=f'"{image.sha256}"')
    data = store.get(thumbnail_key(image.sha256))
    return Blob(data=data, content_type="image/jpeg", etag=f'"{image.sha256}-thumb"')


def _delete_rows(session_factory: sessionmaker[Session], image_id: int) -> str | None:
    """Delete an image and its dependents in one transaction; its sha256, or None if gone."""
    with session_factory() as session, session.begin():
        sha = session.scalar(select(ImageRecord.sha256).where(ImageRecord.id == image_id))
        if sha is None:
            return None
        # the FKs cascade too; explicit deletes keep a backend without FK enforcement clean
        for child in (Membership, Embedding, Caption, ImageText):
            session.execute(delete(child).where(child.image_id == image_id))
        forget_duplicates(session, [image_id])
        session.execute(delete(ImageRecord).where(ImageRecord.id == image_id))
        return sha


def _delete_blobs(store: BlobStore, sha256: str) -> None:
    for key in (original_key(sha256), thumbnail_key(sha256)):
        try:
            store.delete(key)
        except CapsearchError as exc:  # the row is gone already: an orphan blob is harmless
            log.warning("could not delete blob %s: %s", key, exc.message)


async def delete_image(*, image_id: int, session_factory: sessionmaker[Session],
                       store: BlobStore, index: IndexClient) -> None:
    """Forget an image: out of the index first, then its rows, then its blobs."""
    try:
        await index.remove([image_id])
    except CapsearchError as exc:
        if exc.status_code != 404:  # never indexed (still pending) is fine
            raise
    sha = await anyio.to_thread.run_sync(_delete_rows, session_factory, image_id)
    if sha is None:
        raise NotFound(f"image {image_id} not found")
    await anyio.to_thread.run_sync(_delete_blobs, store, sha)
