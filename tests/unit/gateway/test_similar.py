"""POST /v1/search/similar: by id (JSON) or by an uploaded copy (multipart), the image first;
or by a photo outside the collection, embedded by the caption worker and not kept."""

from __future__ import annotations

import anyio
import numpy as np
import pytest
from numpy.typing import NDArray

from shared.db import Embedding
from shared.errors import DependencyTimeout, DependencyUnavailable
from shared.vectors import to_bytes
from tests.unit.gateway.collection import Photo, seed, unit
from tests.unit.gateway.conftest import (
    Gateway,
    GatewayFactory,
    assert_error,
    png_header,
    synthetic_jpeg,
)


@pytest.fixture
def photos(gateway: Gateway) -> dict[str, int]:
    ids = seed(gateway, [
        Photo("dog.jpg", "a dog", vector=unit(1, 0.1)),
        Photo("puppy.jpg", "a puppy", vector=unit(1, 0.2)),
        Photo("car.jpg", "a car", vector=unit(0, 1)),
        Photo("new.jpg", status="pending"),
    ])
    # the index ranks an identical-caption twin above the image itself: it must still lead
    gateway.backends.hits = [(ids["puppy.jpg"], 0.99), (ids["dog.jpg"], 0.99),
                             (ids["car.jpg"], 0.1)]
    return ids


def test_similar_by_id_puts_the_image_first(gateway: Gateway, photos: dict[str, int]) -> None:
    resp = gateway.client.post("/v1/search/similar", json={"image_id": photos["dog.jpg"],
                                                          "k": 3})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["image_id"] == photos["dog.jpg"] and body["k"] == 3
    assert [r["filename"] for r in body["results"]] == ["dog.jpg", "puppy.jpg", "car.jpg"]
    assert body["results"][0]["score"] == pytest.approx(1.0)
    assert body["results"][0]["caption"] == "a dog"
    [sent] = gateway.backends.searches
    assert sent["k"] == 4  # one more than asked: the image itself comes back too
    assert np.allclose(sent["vector"], unit(1, 0.1))  # the image's stored caption vector


def test_similar_applies_k_and_min_score(gateway: Gateway, photos: dict[str, int]) -> None:
    body = gateway.client.post("/v1/search/similar", json={
        "image_id": photos["dog.jpg"], "k": 5, "min_score": 0.5}).json()
    assert [r["filename"] for r in body["results"]] == ["dog.jpg", "puppy.jpg"]
    body = gateway.client.post("/v1/search/similar", json={
        "image_id": photos["dog.jpg"], "k": 1}).json()
    assert [r["filename"] for r in body["results"]] == ["dog.jpg"]


def test_similar_by_uploaded_copy_finds_it_by_sha256(gateway: Gateway) -> None:
    data = synthetic_jpeg(seed=3)
    image_id = gateway.upload([("x.jpg", data)]).json()["images"][0]["id"]
    with gateway.session_factory.begin() as session:
        session.add(Embedding(image_id=image_id, kind="caption",
                              model=gateway.settings.embedding_model, dim=4,
                              vector=to_bytes(np.asarray(unit(1), np.float32))))
    gateway.backends.hits = [(image_id, 1.0)]
    resp = gateway.client.post("/v1/search/similar", files={"file": ("copy.jpg", data)},
                               data={"k": "2"})
    assert resp.status_code == 200, resp.text
    assert [r["id"] for r in resp.json()["results"]] == [image_id]


def test_similar_to_a_photo_outside_the_collection_embeds_it_and_keeps_nothing(
        gateway: Gateway, photos: dict[str, int]) -> None:
    data = synthetic_jpeg(seed=9)
    gateway.photos.vector = unit(1, 0.15)
    rows = gateway.row_count()
    resp = gateway.client.post("/v1/search/similar", files={"file": ("new.jpg", data)},
                               data={"k": "2", "min_score": "0.5"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["image_id"] is None and body["k"] == 2
    assert [r["filename"] for r in body["results"]] == ["puppy.jpg", "dog.jpg"]
    assert gateway.photos.photos == [data]  # the worker got the bytes as sent
    [sent] = gateway.backends.searches
    assert np.allclose(sent["vector"], unit(1, 0.15)) and sent["k"] == 3
    assert gateway.row_count() == rows and gateway.blob_files() == []


def test_a_photo_outside_the_collection_that_is_no_image_is_refused_before_the_worker(
        gateway: Gateway) -> None:
    resp = gateway.client.post("/v1/search/similar", files={"file": ("x.jpg", b"not a photo")})
    assert 400 <= resp.status_code < 500 and set(resp.json()) == {"error"}
    assert gateway.photos.photos == []


def test_a_photo_over_the_pixel_cap_is_413_before_the_worker(make_gateway: GatewayFactory
                                                             ) -> None:
    gateway = make_gateway(max_pixels=1000)
    resp = gateway.client.post("/v1/search/similar",
                               files={"file": ("big.png", png_header(2000, 2000))})
    assert resp.status_code == 413, resp.text
    assert gateway.photos.photos == []


@pytest.mark.parametrize(("error", "status"), [
    (DependencyTimeout("no caption worker answered"), 504),
    (DependencyUnavailable("the caption queue is unavailable"), 503)])
def test_a_worker_that_does_not_answer_is_a_json_5xx(gateway: Gateway, error: Exception,
                                                     status: int) -> None:
    gateway.photos.error = error
    resp = gateway.client.post("/v1/search/similar",
                               files={"file": ("new.jpg", synthetic_jpeg(seed=9))})
    assert_error(resp, status)


def test_a_photo_encoder_that_hangs_is_a_504(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(similar_timeout_s=0.01)  # + the 5 s grace of the gateway's own wait
    release = anyio.Event()

    async def hang(data: bytes) -> NDArray[np.float32]:
        await release.wait()
        raise AssertionError("never answered")

    gateway.photos.embed_photo = hang  # type: ignore[method-assign]
    resp = gateway.client.post("/v1/search/similar",
                               files={"file": ("new.jpg", synthetic_jpeg(seed=9))})
    assert_error(resp, 504, "dependency_timeout")


def test_without_a_photo_encoder_a_photo_outside_the_collection_is_503(gateway: Gateway
                                                                       ) -> None:
    gateway.context.photos = None
    resp = gateway.client.post("/v1/search/similar",
                               files={"file": ("new.jpg", synthetic_jpeg(seed=9))})
    assert_error(resp, 503, "dependency_unavailable")


def test_similar_to_a_pending_image_is_409(gateway: Gateway, photos: dict[str, int]) -> None:
    resp = gateway.client.post("/v1/search/similar", json={"image_id": photos["new.jpg"]})
    assert "pending" in assert_error(resp, 409, "not_indexed")


def test_similar_to_an_unknown_id_is_404(gateway: Gateway) -> None:
    assert_error(gateway.client.post("/v1/search/similar", json={"image_id": 12345}), 404,
                 "not_found")


@pytest.mark.parametrize("body", [{}, {"image_id": 0}, {"image_id": 1, "k": 0},
                                  {"image_id": 1, "k": 101}, {"image_id": 1, "min_score": 2}],
                         ids=["no-id", "id-zero", "k-zero", "k-too-big", "min-score"])
def test_bad_similar_requests_are_422(gateway: Gateway, photos: dict[str, int],
                                      body: dict[str, object]) -> None:
    assert_error(gateway.client.post("/v1/search/similar", json=body), 422,
                 "validation_error")


def test_similar_multipart_without_a_file_is_422(gateway: Gateway) -> None:
    resp = gateway.client.post("/v1/search/similar", files={"other": ("a.txt", b"x")})
    assert_error(resp, 422, "validation_error")


def test_similar_with_another_body_type_is_400(gateway: Gateway) -> None:
    resp = gateway.client.post("/v1/search/similar", content=b"image_id=1",
                               headers={"content-type": "text/plain"})
    assert_error(resp, 400, "unsupported_media_type")


def test_the_search_page_finds_photos_like_a_chosen_photo(gateway: Gateway,
                                                          photos: dict[str, int]) -> None:
    page = gateway.client.get("/")
    assert 'id="photo-search"' in page.text and 'action="/similar"' in page.text
    gateway.photos.vector = unit(1, 0.15)
    resp = gateway.client.post("/similar", files={"file": ("mine.jpg", synthetic_jpeg(seed=5))})
    assert resp.status_code == 200, resp.text
    assert "Photos like your photo" in resp.text
    assert resp.text.index("a puppy") < resp.text.index("a car")


def test_the_search_page_says_why_a_photo_cannot_be_searched(gateway: Gateway) -> None:
    resp = gateway.client.post("/similar", files={"file": ("x.jpg", b"not a photo")})
    assert 400 <= resp.status_code < 500 and "Cannot find similar photos" in resp.text
    assert gateway.photos.photos == []
