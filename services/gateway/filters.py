"""Filters that combine with search and listing: upload date range, folder/source, size."""

from __future__ import annotations

import hashlib
from dataclasses import astuple, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Query
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from shared.db import ImageRecord
from shared.errors import ValidationFailed
from shared.schemas import SourceCount

MAX_BYTES = 2**62


def parse_instant(value: str, *, name: str, end_of_day: bool) -> datetime:
    """An ISO date or date-time as an aware UTC instant; a bare date as the start of that day,
    or (end_of_day) the start of the next, so `date_to=2024-05-01` includes all of May 1st."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            instant = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return instant + timedelta(days=1) if end_of_day else instant
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(f"{name}: {value!r} is not an ISO date (2024-05-01) or "
                               "date-time (2024-05-01T12:00:00Z)") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


@dataclass(frozen=True)
class ImageFilters:
    """Which images a search or a listing may return; every field None = no constraint.
    `date_to` is exclusive (already moved past a bare date's last instant)."""

    date_from: datetime | None = None
    date_to: datetime | None = None
    source: str | None = None
    min_bytes: int | None = None
    max_bytes: int | None = None
    min_megapixels: float | None = None
    max_megapixels: float | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in astuple(self))

    def clauses(self) -> list[ColumnElement[bool]]:
        """SQL conditions on `images` (SQLite stores naive UTC; the binds are UTC too)."""
        img = ImageRecord
        out: list[ColumnElement[bool]] = []
        if self.date_from is not None:
            out.append(img.created_at >= _bind_instant(self.date_from))
        if self.date_to is not None:
            out.append(img.created_at < _bind_instant(self.date_to))
        if self.source is not None:
            folder = self.source.rstrip("/") or "/"
            out.append(or_(img.source == self.source, img.source == folder,
                           img.source.like(_like_prefix(folder.rstrip("/") + "/"),
                                           escape="\\")))
        if self.min_bytes is not None:
            out.append(img.size_bytes >= self.min_bytes)
        if self.max_bytes is not None:
            out.append(img.size_bytes <= self.max_bytes)
        pixels = img.width * img.height
        if self.min_megapixels is not None:
            out.append(pixels >= round(self.min_megapixels * 1e6))
        if self.max_megapixels is not None:
            out.append(pixels <= round(self.max_megapixels * 1e6))
        return out

    def fingerprint(self) -> str:
        return hashlib.sha256(repr(astuple(self)).encode()).hexdigest()[:12]


def _bind_instant(instant: datetime) -> datetime:
    return instant.astimezone(UTC)


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def get_image_filters(
    date_from: Annotated[str | None, Query(max_length=40, description=(
        "uploaded at or after this ISO date or date-time"))] = None,
    date_to: Annotated[str | None, Query(max_length=40, description=(
        "uploaded before this date-time, or on or before this date"))] = None,
    source: Annotated[str | None, Query(min_length=1, max_length=1024, description=(
        "the folder/source given at upload, or a parent folder of it"))] = None,
    min_bytes: Annotated[int | None, Query(ge=0, le=MAX_BYTES)] = None,
    max_bytes: Annotated[int | None, Query(ge=0, le=MAX_BYTES)] = None,
    min_megapixels: Annotated[float | None, Query(ge=0, le=1e6, allow_inf_nan=False)] = None,
    max_megapixels: Annotated[float | None, Query(ge=0, le=1e6, allow_inf_nan=False)] = None,
) -> ImageFilters:
    """The filter query parameters, checked (a range must not be upside down)."""
    start = parse_instant(date_from, name="date_from", end_of_day=False) if date_from else None
    end = parse_instant(date_to, name="date_to", end_of_day=True) if date_to else None
    if start is not None and end is not None and start >= end:
        raise ValidationFailed("date_from: must be before date_to")
    if min_bytes is not None and max_bytes is not None and min_bytes > max_bytes:
        raise ValidationFailed("min_bytes: must not exceed max_bytes")
    if (min_megapixels is not None and max_megapixels is not None
            and min_megapixels > max_megapixels):
        raise ValidationFailed("min_megapixels: must not exceed max_megapixels")
    return ImageFilters(date_from=start, date_to=end, source=(source or "").strip() or None,
                        min_bytes=min_bytes, max_bytes=max_bytes,
                        min_megapixels=min_megapixels, max_megapixels=max_megapixels)


ImageFiltersDep = Annotated[ImageFilters, Depends(get_image_filters)]


def list_sources(session: Session, limit: int) -> list[SourceCount]:
    """The folders/sources images came from, with how many each (for a filter menu)."""
    rows = session.execute(
        select(ImageRecord.source, func.count()).group_by(ImageRecord.source)
        .order_by(ImageRecord.source).limit(limit))
    return [SourceCount(source=source, images=int(count)) for source, count in rows]
