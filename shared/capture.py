"""When a photo was taken: EXIF DateTimeOriginal, with OffsetTimeOriginal when present, as an
aware UTC instant, or None when the file has no such date or it is nonsense.

Without an offset (most cameras write none) the wall-clock time is read as UTC: the instant may
be off by the camera's time zone, but the calendar date and time people see stay the ones the
camera showed. Nonsense is None: no date, one that does not parse, the all-zero or blank
placeholders cameras write, a year before 1826 (the oldest surviving photograph), or more than a
day in the future. Broken EXIF never raises: a photo without a usable date is still a photo.
"""

from __future__ import annotations

import io
import logging
import re
from datetime import UTC, datetime, timedelta, timezone

from PIL import Image

log = logging.getLogger(__name__)

EXIF_IFD = 0x8769  # the Exif sub-IFD, where the capture tags live
DATETIME_ORIGINAL = 0x9003
OFFSET_TIME_ORIGINAL = 0x9011
EARLIEST = datetime(1826, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)  # a camera clock a little ahead, or a far time zone

# "2024:05:01 12:30:45" (the standard); some writers use dashes in the date or a "T"
_STAMP = re.compile(r"(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"([+-])(\d{2}):?(\d{2})")


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if not isinstance(value, str):
        return None
    return value.replace("\x00", "").strip()


def parse_offset(value: object) -> timezone | None:
    """An EXIF offset ("+02:00", "-05:30", "Z") as a time zone; None when absent or bad."""
    text = _text(value)
    if not text:
        return None
    if text.upper() == "Z":
        return UTC
    match = _OFFSET.fullmatch(text)
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    if int(hours) > 14 or int(minutes) > 59:  # real offsets span -12:00 .. +14:00
        return None
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    return timezone(-delta if sign == "-" else delta)


def parse_exif_datetime(value: object, offset: object = None, *,
                        now: datetime | None = None) -> datetime | None:
    """An EXIF date-time string (and optional offset) as an aware UTC instant, or None when
    it is missing or nonsense (see the module's docstring)."""
    text = _text(value)
    if not text:
        return None
    match = _STAMP.match(text)
    if match is None:
        return None
    try:
        wall = datetime(*(int(part) for part in match.groups()))
    except ValueError:  # month 13, February 30th, the "0000:00:00 00:00:00" placeholder
        return None
    instant = wall.replace(tzinfo=parse_offset(offset) or UTC).astimezone(UTC)
    if instant < EARLIEST or instant > (now or datetime.now(UTC)) + FUTURE_SLACK:
        return None
    return instant


def taken_at_of(img: Image.Image, *, now: datetime | None = None) -> datetime | None:
    """The capture instant an opened image's EXIF records (reads metadata, not pixels)."""
    try:
        tags = img.getexif().get_ifd(EXIF_IFD)
        return parse_exif_datetime(tags.get(DATETIME_ORIGINAL),
                                   tags.get(OFFSET_TIME_ORIGINAL), now=now)
    except Exception as exc:  # broken EXIF: Pillow raises all sorts; the photo has no date
        log.debug("unreadable EXIF: %s", exc)
        return None


def read_taken_at(data: bytes, *, now: datetime | None = None) -> datetime | None:
    """`taken_at_of` for encoded bytes (the backfill of stored originals)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return taken_at_of(img, now=now)
    except Exception as exc:  # not an image any more (a damaged blob): no date, no crash
        log.debug("cannot open image for EXIF: %s", exc)
        return None
