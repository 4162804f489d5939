"""Filters that combine with search and listing: upload date range, capture date range,
folder/source, size (read from a request by `api/params.py` and by the UI's form)."""

from __future__ import annotations

import hashlib
from dataclasses import astuple, dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import ColumnElement, or_

from shared.db import ImageRecord
from shared.errors import ValidationFailed


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
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):  # overflow: 9999-12-31's next day, year 1 at +01:00
        raise ValidationFailed(f"{name}: {value!r} is not an ISO date (2024-05-01) or "
                               "date-time (2024-05-01T12:00:00Z)") from None


@dataclass(frozen=True)
class ImageFilters:
    """Which images a search or a listing may return; every field None = no constraint.
    `date_*` is the upload time, `taken_*` the capture time (a photo without one is outside
    any `taken_*` range); the `*_to` ends are exclusive (already moved past a bare date's last
    instant)."""

    date_from: datetime | None = None
    date_to: datetime | None = None
    taken_from: datetime | None = None
    taken_to: datetime | None = None
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
        if self.taken_from is not None:
            out.append(img.taken_at >= _bind_instant(self.taken_from))
        if self.taken_to is not None:
            out.append(img.taken_at < _bind_instant(self.taken_to))
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


def instant_range(start: str | None, end: str | None, *, names: tuple[str, str]
                  ) -> tuple[datetime | None, datetime | None]:
    """A `*_from`/`*_to` pair parsed (`end` inclusive of a bare date's day) and checked: the
    start must come before the end. Errors name the parameter."""
    low = parse_instant(start, name=names[0], end_of_day=False) if start else None
    high = parse_instant(end, name=names[1], end_of_day=True) if end else None
    if low is not None and high is not None and low >= high:
        raise ValidationFailed(f"{names[0]}: must be before {names[1]}")
    return low, high


def _bind_instant(instant: datetime) -> datetime:
    return instant.astimezone(UTC)


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"
