"""EXIF capture dates: DateTimeOriginal with or without OffsetTimeOriginal, nonsense is None."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from shared.capture import parse_exif_datetime, parse_offset, read_taken_at
from shared.images import check_image
from tests.support.exif import jpeg_taken

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_a_date_with_its_offset_is_the_utc_instant() -> None:
    taken = read_taken_at(jpeg_taken("2024:05:01 12:30:45", "+02:00"), now=NOW)
    assert taken == datetime(2024, 5, 1, 10, 30, 45, tzinfo=UTC)
    west = read_taken_at(jpeg_taken("2024:05:01 22:00:00", "-05:30"), now=NOW)
    assert west == datetime(2024, 5, 2, 3, 30, tzinfo=UTC)


def test_a_date_without_an_offset_is_read_as_utc_wall_clock() -> None:
    taken = read_taken_at(jpeg_taken("2024:05:01 12:30:45"), now=NOW)
    assert taken == datetime(2024, 5, 1, 12, 30, 45, tzinfo=UTC)
    assert taken is not None and taken.tzinfo is UTC


def test_a_photo_without_exif_has_no_date() -> None:
    assert read_taken_at(jpeg_taken(None), now=NOW) is None


@pytest.mark.parametrize("stamp", [
    "0000:00:00 00:00:00",  # the placeholder of cameras without a clock
    "    :  :     :  :  ",  # the blank one
    "",
    "yesterday",
    "2024:13:01 12:00:00",  # no month 13
    "2023:02:29 12:00:00",  # no leap day in 2023
    "2024:05:01 25:00:00",
    "1825:12:31 23:59:59",  # before the oldest surviving photograph
    "2026:12:05 12:00:00",  # two days ahead of NOW
])
def test_nonsense_dates_are_none(stamp: str) -> None:
    assert read_taken_at(jpeg_taken(stamp), now=NOW) is None


def test_a_day_ahead_is_allowed_more_is_not() -> None:
    assert parse_exif_datetime("2026:12:04 11:00:00", now=NOW) == NOW + timedelta(hours=23)
    assert parse_exif_datetime("2026:12:04 13:00:00", now=NOW) is None
    assert parse_exif_datetime("1826:01:01 00:00:00", now=NOW) == datetime(1826, 1, 1,
                                                                           tzinfo=UTC)


def test_a_bad_offset_is_ignored_not_fatal() -> None:
    assert parse_offset("+25:00") is None and parse_offset("two") is None
    assert parse_offset("Z") is UTC
    taken = read_taken_at(jpeg_taken("2024:05:01 12:00:00", "+99:99"), now=NOW)
    assert taken == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_the_stamp_may_come_as_bytes_with_a_trailing_nul() -> None:
    assert parse_exif_datetime(b"2024:05:01 12:00:00\x00", now=NOW) == datetime(
        2024, 5, 1, 12, tzinfo=UTC)
    assert parse_exif_datetime(20240501, now=NOW) is None  # a number where text belongs


def test_broken_exif_never_raises() -> None:
    good = jpeg_taken("2024:05:01 12:00:00")
    start = good.index(b"Exif\x00\x00")
    broken = good[:start + 6] + b"\xff" * 40 + good[start + 46:]  # the TIFF header trashed
    assert read_taken_at(broken, now=NOW) is None
    assert read_taken_at(b"not an image at all", now=NOW) is None


def test_the_upload_check_reads_the_capture_date() -> None:
    checked = check_image(jpeg_taken("2024:05:01 12:00:00", "+00:00"), max_bytes=10**6,
                          max_pixels=10**6)
    assert checked.taken_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    assert check_image(png.getvalue(), max_bytes=10**6, max_pixels=10**6).taken_at is None
