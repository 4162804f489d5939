"""Text in photos on the embedded server, through its HTTP API: a photo of a sign is read
after it is indexed, shows its text, and its words find it first among 30 other photos."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from capsearch.client import CapsearchClient
from capsearch.embedded import embedded_client
from shared.config import Settings
from shared.schemas import ImagePublic
from tests.support.signs import sign_photo

pytestmark = pytest.mark.integration

OTHERS = 30
SIGN = ["PLATFORM 9", "KINGS CROSS"]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CapsearchClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("embedded-ocr"), database_url=None,
                        blob_backend="local", queue_backend="inprocess", ocr=True)
    with embedded_client(settings) as client:
        yield client


def wait_for_text(client: CapsearchClient, image_id: int, timeout: float = 300
                  ) -> ImagePublic:
    """Poll the image record until the OCR stage has read it (or fail at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        record = client.image(image_id)
        if record.ocr_text is not None:
            return record
        assert time.monotonic() < deadline, f"image {image_id}: text not read in {timeout} s"
        time.sleep(0.2)  # the poll interval; the condition is the record above


def test_a_sign_is_read_shown_and_found_first_by_its_words(client: CapsearchClient,
                                                           data_root: Path,
                                                           tmp_path: Path) -> None:
    photos = sorted((data_root / "coco-mini-val" / "images").glob("*.jpg"))[:OTHERS + 1]
    sign = tmp_path / "station.jpg"
    sign.write_bytes(sign_photo(photos[OTHERS], SIGN))  # a photo none of the others is
    items = client.upload(photos[:OTHERS]) + client.upload([sign])
    final = client.wait_indexed([i.id for i in items], timeout=600)
    assert {r.status for r in final.values()} == {"indexed"}
    sign_id = items[-1].id

    record = wait_for_text(client, sign_id)
    assert [line.lower() for line in (record.ocr_text or "").splitlines()] == [
        "platform 9", "kings cross"]
    assert record.ocr_confidence is not None and record.ocr_confidence > 0.75
    # no caption says it: the words on the sign find the photo
    assert "platform" not in (record.caption or "").lower()

    for others in items[:OTHERS]:  # every photo read, so the ranking below is final
        wait_for_text(client, others.id)
    for query in ("platform 9 kings cross", "kingscross"):
        results = client.search(query, k=10).results
        assert results[0].id == sign_id, (query, [(r.filename, r.score) for r in results])
