"""Capture dates through the real stack: photos uploaded with EXIF dates come back newest
capture first with `sort=taken`, each result carrying `taken_at`; `capsearch doctor
--backfill-taken` fills a missing date from the original in S3."""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import text

from capsearch.client import CapsearchClient
from shared.capture import DATETIME_ORIGINAL, EXIF_IFD, OFFSET_TIME_ORIGINAL
from tests.integration.conftest import RunningStack

pytestmark = pytest.mark.integration

# (EXIF DateTimeOriginal, OffsetTimeOriginal) per photo, in upload order; None: no EXIF date
DATES: list[tuple[str, str | None] | None] = [
    ("2015:08:01 09:00:00", None),
    None,
    ("2021:03:14 15:09:26", "+01:00"),
    ("2018:12:24 20:00:00", "-05:00"),
]
SOURCE = "/it/capture-dates"


def with_exif(path: Path, stamp: tuple[str, str | None] | None) -> bytes:
    """The photo re-encoded with that capture date (new bytes: never a duplicate upload)."""
    out = io.BytesIO()
    with Image.open(path) as img:
        exif = Image.Exif()
        if stamp is not None:
            tags = exif.get_ifd(EXIF_IFD)
            tags[DATETIME_ORIGINAL] = stamp[0]
            if stamp[1] is not None:
                tags[OFFSET_TIME_ORIGINAL] = stamp[1]
        img.convert("RGB").save(out, format="JPEG", quality=88, exif=exif)
    return out.getvalue()


@pytest.fixture(scope="module")
def dated(stack: RunningStack, data_root: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> list[int]:
    """The photos uploaded (to their own source) and indexed; their ids in upload order."""
    folder = tmp_path_factory.mktemp("dated")
    originals = sorted((data_root / "coco-mini-val" / "images").glob("*.jpg"))[-len(DATES):]
    files = []
    for n, (path, stamp) in enumerate(zip(originals, DATES, strict=True)):
        files.append(folder / f"dated{n}.jpg")
        files[-1].write_bytes(with_exif(path, stamp))
    with CapsearchClient(stack.url) as client:
        items = client.upload(files, source=SOURCE)
        final = client.wait_indexed([i.id for i in items], timeout=600)
    assert {r.status for r in final.values()} == {"indexed"}
    return [i.id for i in items]


def test_sort_taken_returns_newest_capture_first_each_with_taken_at(
        stack: RunningStack, dated: list[int]) -> None:
    with CapsearchClient(stack.url) as client:
        page = client.search("a photo", k=10, sort="taken", source=SOURCE)
    assert page.sort == "taken"
    assert [r.id for r in page.results] == [dated[2], dated[3], dated[0], dated[1]]
    assert [r.taken_at for r in page.results] == [
        datetime(2021, 3, 14, 14, 9, 26, tzinfo=UTC),  # +01:00
        datetime(2018, 12, 25, 1, 0, tzinfo=UTC),  # -05:00
        datetime(2015, 8, 1, 9, 0, tzinfo=UTC),  # no offset: read as UTC
        None,
    ]


def test_capture_range_and_listing_use_the_stored_dates(
        stack: RunningStack, dated: list[int]) -> None:
    with CapsearchClient(stack.url) as client:
        within = client.search("a photo", k=10, source=SOURCE, taken_from="2016-01-01",
                               taken_to="2019-12-31")
        listed = client.images(sort="taken", source=SOURCE)
    assert [r.id for r in within.results] == [dated[3]]
    assert [i.id for i in listed.images] == [dated[2], dated[3], dated[0], dated[1]]


def test_doctor_backfills_a_missing_date_from_the_original_in_s3(
        stack: RunningStack, dated: list[int]) -> None:
    with stack.engine.begin() as conn:  # as a row stored before capture dates were read
        conn.execute(text("UPDATE images SET taken_at = NULL WHERE id = :id"),
                     {"id": dated[0]})
    done = subprocess.run([sys.executable, "-m", "capsearch", "doctor", "--backfill-taken"],
                          env=stack.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "backfill-taken:" in done.stderr and "backfill-taken done:" in done.stdout
    with CapsearchClient(stack.url) as client:
        assert client.image(dated[0]).taken_at == datetime(2015, 8, 1, 9, 0, tzinfo=UTC)
