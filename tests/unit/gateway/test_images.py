"""GET /v1/images[/{id}[/content|/thumbnail]] and DELETE /v1/images/{id}."""

from __future__ import annotations

import io

from PIL import Image
from sqlalchemy import func, select

from shared.db import Caption, Embedding
from tests.unit.gateway.conftest import Gateway, assert_error, coco_jpegs, synthetic_jpeg


def upload_one(gateway: Gateway, data: bytes | None = None, name: str = "a.jpg") -> int:
    resp = gateway.upload([(name, data if data is not None else synthetic_jpeg())])
    assert resp.status_code == 202, resp.text
    return int(resp.json()["images"][0]["id"])


def add_caption(gateway: Gateway, image_id: int, text: str, model: str = "tags") -> None:
    with gateway.session_factory.begin() as session:
        session.add(Caption(image_id=image_id, text=text, model=model))


def test_get_image_describes_status_metadata_and_urls(gateway: Gateway) -> None:
    path = coco_jpegs(1)[0]
    image_id = upload_one(gateway, path.read_bytes(), path.name)
    body = gateway.client.get(f"/v1/images/{image_id}").json()
    assert body["id"] == image_id
    assert (body["status"], body["error"], body["caption"]) == ("pending", None, None)
    assert (body["filename"], body["format"], body["size_bytes"]) == (
        path.name, "JPEG", path.stat().st_size)
    assert body["content_url"] == f"/v1/images/{image_id}/content"
    assert body["thumbnail_url"] == f"/v1/images/{image_id}/thumbnail"
    assert body["status_url"] == f"/v1/images/{image_id}"


def test_image_times_carry_their_utc_offset(gateway: Gateway) -> None:
    # SQLite hands stored instants back naive: the API still says they are UTC
    body = gateway.client.get(f"/v1/images/{upload_one(gateway)}").json()
    assert body["created_at"].endswith(("+00:00", "Z")), body["created_at"]
    assert body["updated_at"].endswith(("+00:00", "Z")), body["updated_at"]


def test_get_image_shows_the_latest_caption(gateway: Gateway) -> None:
    image_id = upload_one(gateway)
    add_caption(gateway, image_id, "an old caption", model="tags")
    add_caption(gateway, image_id, "a dog on a beach", model="sat")
    assert gateway.client.get(f"/v1/images/{image_id}").json()["caption"] == "a dog on a beach"


def test_get_unknown_image_is_404_json(gateway: Gateway) -> None:
    assert_error(gateway.client.get("/v1/images/999"), 404, "not_found")


def test_non_integer_image_id_is_422_json(gateway: Gateway) -> None:
    assert_error(gateway.client.get("/v1/images/abc"), 422, "validation_error")


def test_lookup_reads_many_images_in_the_order_asked(gateway: Gateway) -> None:
    ids = [upload_one(gateway, synthetic_jpeg(seed=i), f"{i}.jpg") for i in range(3)]
    add_caption(gateway, ids[1], "a dog on a beach")
    asked = [ids[2], 999_999, ids[0], ids[1], ids[2]]
    resp = gateway.client.post("/v1/images/lookup", json={"ids": asked})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [i["id"] for i in body["images"]] == [ids[2], ids[0], ids[1]]  # each id once
    assert body["missing"] == [999_999]
    assert [i["status"] for i in body["images"]] == ["pending"] * 3
    assert body["images"][2]["caption"] == "a dog on a beach"
    assert body["images"][0] == gateway.client.get(f"/v1/images/{ids[2]}").json()


def test_lookup_refuses_empty_huge_or_bad_id_lists(gateway: Gateway) -> None:
    post = gateway.client.post
    assert_error(post("/v1/images/lookup", json={"ids": []}), 422, "validation_error")
    assert_error(post("/v1/images/lookup", json={"ids": list(range(1, 1002))}), 422)
    assert_error(post("/v1/images/lookup", json={"ids": [0]}), 422)
    assert_error(post("/v1/images/lookup", json={"ids": ["abc"]}), 422)
    assert_error(post("/v1/images/lookup", json={"ids": [2**63]}), 422)
    assert_error(post("/v1/images/lookup", content=b"{not json",
                      headers={"content-type": "application/json"}), 422)


def test_list_images_pages_newest_first(gateway: Gateway) -> None:
    ids = [upload_one(gateway, synthetic_jpeg(seed=i), f"{i}.jpg") for i in range(3)]
    page = gateway.client.get("/v1/images", params={"limit": 2}).json()
    assert [i["id"] for i in page["images"]] == [ids[2], ids[1]]
    assert (page["total"], page["next_offset"]) == (3, 2)
    last = gateway.client.get("/v1/images", params={"limit": 2, "offset": 2}).json()
    assert [i["id"] for i in last["images"]] == [ids[0]]
    assert last["next_offset"] is None


def test_list_images_filters_by_status(gateway: Gateway) -> None:
    upload_one(gateway, synthetic_jpeg(seed=1))
    assert gateway.client.get("/v1/images", params={"status": "pending"}).json()["total"] == 1
    assert gateway.client.get("/v1/images", params={"status": "indexed"}).json()["total"] == 0


def test_list_images_refuses_unknown_status_and_huge_limit(gateway: Gateway) -> None:
    assert_error(gateway.client.get("/v1/images", params={"status": "lost"}), 422)
    assert_error(gateway.client.get("/v1/images", params={"limit": 10_000}), 422)


def test_content_returns_original_bytes_with_etag_and_cache_headers(gateway: Gateway) -> None:
    data = synthetic_jpeg()
    image_id = upload_one(gateway, data)
    resp = gateway.client.get(f"/v1/images/{image_id}/content")
    assert resp.status_code == 200
    assert resp.content == data
    assert resp.headers["content-type"] == "image/jpeg"
    sha = gateway.client.get(f"/v1/images/{image_id}").json()["sha256"]
    assert resp.headers["etag"] == f'"{sha}"'
    assert "max-age=31536000" in resp.headers["cache-control"]


def test_content_with_matching_if_none_match_is_304(gateway: Gateway) -> None:
    image_id = upload_one(gateway)
    etag = gateway.client.get(f"/v1/images/{image_id}/content").headers["etag"]
    resp = gateway.client.get(f"/v1/images/{image_id}/content",
                              headers={"If-None-Match": etag})
    assert resp.status_code == 304 and resp.content == b""


def test_thumbnail_is_a_small_jpeg(gateway: Gateway) -> None:
    path = coco_jpegs(1)[0]
    image_id = upload_one(gateway, path.read_bytes(), path.name)
    resp = gateway.client.get(f"/v1/images/{image_id}/thumbnail")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/jpeg"
    assert resp.headers["etag"]
    with Image.open(io.BytesIO(resp.content)) as thumb:
        assert thumb.format == "JPEG"
        assert max(thumb.size) <= gateway.settings.thumbnail_px


def test_content_and_thumbnail_of_unknown_image_are_404(gateway: Gateway) -> None:
    assert_error(gateway.client.get("/v1/images/42/content"), 404, "not_found")
    assert_error(gateway.client.get("/v1/images/42/thumbnail"), 404, "not_found")


def test_delete_removes_index_entry_rows_and_blobs(gateway: Gateway) -> None:
    image_id = upload_one(gateway)
    add_caption(gateway, image_id, "a cat")
    with gateway.session_factory.begin() as session:
        session.add(Embedding(image_id=image_id, kind="caption", model="m", dim=1,
                              vector=b"\0\0\0\0"))
    resp = gateway.client.delete(f"/v1/images/{image_id}")
    assert resp.status_code == 204 and resp.content == b""
    assert gateway.backends.removed == [image_id]
    assert gateway.row_count() == 0
    with gateway.session_factory() as session:
        for table in (Caption, Embedding):
            assert session.scalar(select(func.count()).select_from(table)) == 0
    assert gateway.blob_files() == []
    assert_error(gateway.client.get(f"/v1/images/{image_id}"), 404)


def test_delete_unknown_image_is_404_json(gateway: Gateway) -> None:
    assert_error(gateway.client.delete("/v1/images/77"), 404, "not_found")
    assert gateway.backends.removed == []


def test_delete_of_image_not_in_the_index_still_deletes(gateway: Gateway) -> None:
    image_id = upload_one(gateway)
    gateway.backends.remove_status = 404
    assert gateway.client.delete(f"/v1/images/{image_id}").status_code == 204
    assert gateway.row_count() == 0


def test_delete_while_search_service_is_down_keeps_the_image(gateway: Gateway) -> None:
    image_id = upload_one(gateway)
    gateway.backends.remove_status = 503
    assert_error(gateway.client.delete(f"/v1/images/{image_id}"), 503)
    assert gateway.row(image_id) is not None
    assert len(gateway.blob_files()) == 2


def test_out_of_range_ids_and_offsets_are_422_not_500(gateway: Gateway) -> None:
    assert_error(gateway.client.get(f"/v1/images/{2**70}"), 422, "validation_error")
    assert_error(gateway.client.get("/v1/images/0"), 422, "validation_error")
    assert_error(gateway.client.get("/v1/images", params={"offset": 2**70}), 422)
