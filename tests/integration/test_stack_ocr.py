"""Text in photos on the stack (real Postgres, Redis, S3; four processes): the worker reads an
uploaded sign after indexing it, the record shows the text and its words find the photo."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from capsearch.client import CapsearchClient
from tests.integration.conftest import RunningStack
from tests.support.signs import sign_photo

pytestmark = pytest.mark.integration

# photos far past the ones other stack tests upload (test_stack_pipeline's pool is 40)
BASE_PHOTO = 120
OTHERS = range(121, 126)


def test_an_uploaded_sign_is_found_by_its_words_and_shows_its_text(
        stack: RunningStack, data_root: Path, tmp_path: Path) -> None:
    photos = sorted((data_root / "coco-mini-val" / "images").glob("*.jpg"))
    sign = tmp_path / "cafe-sign.jpg"
    sign.write_bytes(sign_photo(photos[BASE_PHOTO], ["MARGATE", "HARBOUR CAFE"]))
    with CapsearchClient(stack.url) as client:
        items = client.upload([sign, *(photos[i] for i in OTHERS)])
        final = client.wait_indexed([i.id for i in items], timeout=600)
        assert {r.status for r in final.values()} == {"indexed"}
        sign_id = items[0].id

        deadline = time.monotonic() + 300
        while (record := client.image(sign_id)).ocr_text is None:  # the OCR stage follows
            assert time.monotonic() < deadline, "the sign's text was not read in 300 s"
            time.sleep(0.25)
        # the recogniser may run the words of a line together ("HARBOURCAFE"): search
        # matches either way, which the queries below check
        assert [line.lower().replace(" ", "") for line in record.ocr_text.splitlines()] == [
            "margate", "harbourcafe"]
        assert record.ocr_confidence is not None and record.ocr_confidence > 0.75
        assert stack.count("image_texts") >= 1

        results = client.search("margate harbour cafe", k=5).results
        assert results[0].id == sign_id, [(r.filename, r.score) for r in results]
        assert client.search("harbourcafe", k=5).results[0].id == sign_id

    metrics = httpx.get(f"{stack.url}/metrics",
                        headers={"Authorization": f"Bearer {stack.api_key}"}, timeout=30)
    assert metrics.status_code == 200 and "capsearch_ocr_waiting" in metrics.text
