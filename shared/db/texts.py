"""Text read in photos (OCR): one `image_texts` row per image, and the queries around it.

One row per image, not per line: the row is the OCR stage's idempotent "done" mark (an
image without a row still waits for OCR, whether its photo had text or not), and the photo's
lines are searched as one document, so a query whose words sit on different lines of a sign
("PLATFORM 9" / "KINGS CROSS") matches it. The lines stay in `text`, one per line.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import DateTime, Float, ForeignKey, Select, String, Text, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from shared.db.models import Base, ImageRecord, ImageStatus, utcnow
from shared.db.queries import chunked


class ImageText(Base):
    """What OCR read in one image: its lines (newline-joined; "" when it found none), their
    mean confidence weighted by length, and `words`, the document full-text search matches
    (shared/db/fulltext.photo_text_document). `error`: why the image could not be read."""

    __tablename__ = "image_texts"

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(64), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False, default="")
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    words: Mapped[str] = mapped_column(Text, nullable=False, default="")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def _waiting() -> Select[tuple[int]]:
    """Indexed images without an `image_texts` row (a select of their ids)."""
    return (select(ImageRecord.id)
            .outerjoin(ImageText, ImageText.image_id == ImageRecord.id)
            .where(ImageRecord.status == ImageStatus.indexed.value,
                   ImageText.image_id.is_(None)))


def ocr_waiting(session: Session, limit: int | None = 10_000, *,
                changed_before: datetime | None = None) -> list[int]:
    """Ids of indexed images OCR has not read yet, oldest first, at most `limit` (None: all;
    with `changed_before`: only those whose row has not changed since, i.e. indexed before)."""
    stmt = _waiting()
    if changed_before is not None:
        stmt = stmt.where(ImageRecord.updated_at < changed_before)
    return [int(i) for i in session.scalars(stmt.order_by(ImageRecord.id).limit(limit))]


def count_ocr_waiting(session: Session) -> int:
    """How many indexed images OCR has not read yet (progress: doctor, /metrics)."""
    return int(session.scalar(select(func.count()).select_from(_waiting().subquery())) or 0)


def unread(session: Session, image_ids: Sequence[int]) -> dict[int, str]:
    """Of these ids, the indexed images without an `image_texts` row: their sha256 by id, in
    the order given."""
    wanted = list(dict.fromkeys(int(i) for i in image_ids))
    found: dict[int, str] = {}
    for chunk in chunked(wanted):
        found.update({int(i): sha for i, sha in session.execute(
            _waiting().add_columns(ImageRecord.sha256).where(ImageRecord.id.in_(chunk)))})
    return {i: found[i] for i in wanted if i in found}


def texts_of(session: Session, image_ids: Sequence[int]) -> dict[int, ImageText]:
    """The `image_texts` rows of these images (those read), by image id."""
    out: dict[int, ImageText] = {}
    for chunk in chunked(list(dict.fromkeys(int(i) for i in image_ids))):
        out.update({row.image_id: row for row in session.scalars(
            select(ImageText).where(ImageText.image_id.in_(chunk)))})
    return out
