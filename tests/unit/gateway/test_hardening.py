"""Strange but valid inputs at the gateway: odd photo formats, lying file names, unicode."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from shared.images import CONTENT_TYPES
from tests.unit.gateway.conftest import Gateway, GatewayFactory, assert_error
from tests.unit.shared.test_image_formats import CASES


@pytest.mark.parametrize("name", list(CASES))
def test_every_photo_format_is_accepted_with_a_jpeg_thumbnail(gateway: Gateway,
                                                              name: str) -> None:
    resp = gateway.upload([(f"{name}.bin", CASES[name]())])
    assert resp.status_code == 202, resp.text
    image_id = resp.json()["images"][0]["id"]
    thumb = gateway.client.get(f"/v1/images/{image_id}/thumbnail")
    assert thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).mode == "RGB"


def test_a_png_named_and_typed_as_jpeg_is_stored_as_png(gateway: Gateway) -> None:
    png = CASES["rgba png"]()
    resp = gateway.client.post("/v1/images",
                               files=[("files", ("holiday.jpg", png, "image/jpeg"))])
    assert resp.status_code == 202
    image_id = resp.json()["images"][0]["id"]
    assert gateway.client.get(f"/v1/images/{image_id}").json()["format"] == "PNG"
    content = gateway.client.get(f"/v1/images/{image_id}/content")
    assert content.headers["content-type"] == CONTENT_TYPES["PNG"]
    assert content.content == png


def test_an_svg_claiming_to_be_a_jpeg_is_refused(gateway: Gateway) -> None:
    svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"
    resp = gateway.client.post("/v1/images", files=[("files", ("x.jpg", svg, "image/jpeg"))])
    assert_error(resp, 415, "invalid_image")
    assert gateway.row_count() == 0


@pytest.mark.parametrize("query", [
    "un chat sur le canapé",
    "一只猫坐在沙发上",
    "قطة على الأريكة",
    "a 🐱 on a 🛋️",
    "e\u0301le\u0301phant",  # combining accents
    "dog\u200bcat",  # a zero-width space inside
])
def test_unicode_queries_are_answered(gateway: Gateway, query: str) -> None:
    resp = gateway.client.get("/v1/search", params={"q": query})
    assert resp.status_code == 200, resp.text
    assert resp.json()["query"] == query
    assert gateway.backends.encoded[-1] == [query]


@pytest.mark.parametrize("query", ["", "   ", "\t\n", "\u200b\u200b", "\x00\x01"])
def test_empty_or_invisible_queries_are_422_saying_so(gateway: Gateway, query: str) -> None:
    message = assert_error(gateway.client.get("/v1/search", params={"q": query}), 422,
                           "validation_error")
    assert "empty" in message
    assert gateway.backends.encoded == []


def test_control_characters_are_dropped_from_a_query(gateway: Gateway) -> None:
    resp = gateway.client.get("/v1/search", params={"q": "red\x00 car\x07"})
    assert resp.status_code == 200
    assert gateway.backends.encoded[-1] == ["red car"]


def test_a_query_over_the_length_cap_is_422(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(query_max_chars=20)
    message = assert_error(gateway.client.get("/v1/search", params={"q": "a" * 21}), 422)
    assert "20" in message
    assert gateway.client.get("/v1/search", params={"q": "a" * 20}).status_code == 200


@pytest.mark.parametrize("k", ["0", "-1", "101", "99999999999999999999", "ten"])
def test_k_outside_its_bounds_is_422(gateway: Gateway, k: str) -> None:
    assert_error(gateway.client.get("/v1/search", params={"q": "dog", "k": k}), 422)


@pytest.mark.parametrize("body", [
    {"folder": "http://169.254.169.254/latest/meta-data/"},
    {"folder": "file:///etc/passwd"},
    {"folder": "/etc"},
    {"prefix": "https://evil.example/x/"},
    {"prefix": "../originals/"},
])
def test_bulk_imports_never_fetch_urls_or_leave_their_roots(make_gateway: GatewayFactory,
                                                            tmp_path, body: dict[str, str]
                                                            ) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "photos"
    root.mkdir()
    gateway = make_gateway(import_roots=[root], import_prefixes=["incoming/"])
    resp = gateway.client.post("/v1/imports", json=body)
    assert 400 <= resp.status_code < 500, resp.text
    assert gateway.row_count() == 0
