"""The four services as separate processes over real HTTP, Celery/Redis, Postgres and S3."""

from __future__ import annotations

from pathlib import Path

import pytest

from capsearch.client import ApiError, CapsearchClient
from capsearch.files import read_captions
from tests.integration.conftest import RunningStack

pytestmark = pytest.mark.integration

POOL = 40


@pytest.fixture(scope="module")
def coco(data_root: Path) -> tuple[list[Path], dict[str, list[str]]]:
    folder = data_root / "coco-mini-val"
    captions = read_captions(folder / "captions.tsv")
    photos = sorted((folder / "images").glob("*.jpg"))[:POOL]
    return photos, captions


@pytest.fixture(scope="module")
def indexed(stack: RunningStack, coco: tuple[list[Path], dict[str, list[str]]]
            ) -> dict[str, int]:
    """Upload the pool once through the gateway and wait until the worker indexed it all."""
    photos, _ = coco
    with CapsearchClient(stack.url) as client:
        items = []
        for start in range(0, len(photos), 10):
            items += client.upload(photos[start:start + 10])
        final = client.wait_indexed([i.id for i in items], timeout=600)
    assert {r.status for r in final.values()} == {"indexed"}, [
        (r.filename, r.error) for r in final.values() if r.status != "indexed"]
    return {p.name: item.id for p, item in zip(photos, items, strict=True)}


def test_every_uploaded_photo_gets_a_caption_and_is_indexed(
        stack: RunningStack, indexed: dict[str, int]) -> None:
    with CapsearchClient(stack.url) as client:
        records = [client.image(i) for i in indexed.values()]
    assert all(r.status == "indexed" and r.caption for r in records)
    assert stack.count("embeddings") >= len(indexed)
    keys = stack.object_keys()
    assert all(f"originals/{r.sha256[:2]}/{r.sha256}" in keys for r in records)
    assert all(f"thumbnails/{r.sha256[:2]}/{r.sha256}.jpg" in keys for r in records)


def test_human_captions_find_their_photo_in_the_top_10(
        stack: RunningStack, indexed: dict[str, int],
        coco: tuple[list[Path], dict[str, list[str]]]) -> None:
    _, captions = coco
    hits = 0
    with CapsearchClient(stack.url) as client:
        for name, image_id in indexed.items():
            results = client.search(captions[name][0], k=10).results
            hits += image_id in [r.id for r in results]
    # chance level for a 40-photo pool is 25%; tag captions do far better
    assert hits / len(indexed) >= 0.5, f"only {hits}/{len(indexed)} captions found their photo"


def test_search_results_carry_caption_score_and_working_content_url(
        stack: RunningStack, indexed: dict[str, int]) -> None:
    with CapsearchClient(stack.url) as client:
        results = client.search("a photo", k=5)
        assert len(results.results) == 5
        scores = [r.score for r in results.results]
        assert scores == sorted(scores, reverse=True)
        top = results.results[0]
        assert top.caption
        body = client._http.get(top.content_url)
        assert body.status_code == 200 and body.content[:2] == b"\xff\xd8"


def test_reupload_returns_the_same_id_without_new_rows(
        stack: RunningStack, indexed: dict[str, int],
        coco: tuple[list[Path], dict[str, list[str]]]) -> None:
    photos, _ = coco
    rows_before = stack.count("images")
    with CapsearchClient(stack.url) as client:
        again = client.upload([photos[0]])
    assert again[0].id == indexed[photos[0].name]
    assert again[0].duplicate is True
    assert stack.count("images") == rows_before


@pytest.mark.parametrize("name, payload", [
    ("notes.txt", b"this is not an image at all"),
    ("empty.jpg", b""),
    ("truncated.jpg", None),  # filled from a real JPEG below
    ("huge.jpg", b"\xff\xd8\xff\xe0" + b"\0" * (3 * 1024 * 1024)),
])
def test_bad_upload_is_refused_and_leaves_no_row_and_no_blob(
        stack: RunningStack, coco: tuple[list[Path], dict[str, list[str]]],
        name: str, payload: bytes | None) -> None:
    photos, _ = coco
    if payload is None:
        payload = photos[-1].read_bytes()[:5000]
    rows, keys = stack.count("images"), stack.object_keys()
    with CapsearchClient(stack.url) as client:
        resp = client._http.post("/v1/images", files=[("files", (name, payload, "image/jpeg"))])
    assert 400 <= resp.status_code < 500
    assert set(resp.json()["error"]) == {"code", "message"}
    assert stack.count("images") == rows
    assert stack.object_keys() == keys


def test_delete_removes_rows_blobs_and_search_membership(
        stack: RunningStack, data_root: Path) -> None:
    photo = sorted((data_root / "coco-mini-train" / "images").glob("*.jpg"))[0]
    with CapsearchClient(stack.url) as client:
        item = client.upload([photo])[0]
        record = client.wait_indexed([item.id], timeout=300)[item.id]
        assert record.status == "indexed"
        client.delete(item.id)
        with pytest.raises(ApiError) as err:
            client.image(item.id)
        assert err.value.status == 404
        results = client.search(record.caption or "a photo", k=50).results
    assert item.id not in [r.id for r in results]
    assert f"originals/{record.sha256[:2]}/{record.sha256}" not in stack.object_keys()
    with stack.engine.connect() as conn:
        from sqlalchemy import text

        left = conn.execute(text("SELECT count(*) FROM embeddings WHERE image_id = :i"),
                            {"i": item.id}).scalar_one()
    assert left == 0
