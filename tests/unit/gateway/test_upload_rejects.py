"""POST /v1/images: every bad upload is a 4xx JSON error that stores nothing."""

from __future__ import annotations

import pytest

from tests.unit.gateway.conftest import (
    Gateway,
    GatewayFactory,
    assert_error,
    coco_jpegs,
    png_header,
    synthetic_jpeg,
)


def assert_nothing_stored(gateway: Gateway) -> None:
    assert gateway.row_count() == 0
    assert gateway.blob_files() == []
    assert gateway.queue.ids == []


def test_not_an_image_is_415_naming_the_file(gateway: Gateway) -> None:
    resp = gateway.upload([("notes.jpg", b"this is plain text, not a photo")])
    assert "notes.jpg" in assert_error(resp, 415, "invalid_image")
    assert_nothing_stored(gateway)


def test_empty_file_is_415(gateway: Gateway) -> None:
    assert_error(gateway.upload([("empty.jpg", b"")]), 415, "invalid_image")
    assert_nothing_stored(gateway)


def test_truncated_jpeg_is_415(gateway: Gateway) -> None:
    data = synthetic_jpeg((256, 256))
    resp = gateway.upload([("cut.jpg", data[: len(data) // 2])])
    assert "cut.jpg" in assert_error(resp, 415, "invalid_image")
    assert_nothing_stored(gateway)


def test_file_over_the_byte_cap_is_413(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(max_upload_bytes=2_000)
    resp = gateway.upload([("big.jpg", synthetic_jpeg((128, 128)))])
    assert "big.jpg" in assert_error(resp, 413, "payload_too_large")
    assert_nothing_stored(gateway)


def test_body_over_the_request_cap_is_413_json(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(max_upload_bytes=1_000, max_files_per_request=1)
    resp = gateway.upload([("huge.bin", b"\0" * 200_000)])
    assert_error(resp, 413, "payload_too_large")
    assert_nothing_stored(gateway)


@pytest.mark.parametrize("side", [20_000, 100_000])
def test_png_header_claiming_huge_dimensions_is_413(gateway: Gateway, side: int) -> None:
    resp = gateway.upload([("bomb.png", png_header(side, side))])
    assert "bomb.png" in assert_error(resp, 413, "payload_too_large")
    assert_nothing_stored(gateway)


def test_real_photo_over_a_small_pixel_cap_is_413(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(max_pixels=10_000)
    path = coco_jpegs(1)[0]
    assert_error(gateway.upload([(path.name, path.read_bytes())]), 413, "payload_too_large")
    assert_nothing_stored(gateway)


def test_mixed_batch_with_one_bad_file_stores_nothing(gateway: Gateway) -> None:
    files = [("good1.jpg", synthetic_jpeg(seed=1)), ("bad.jpg", b"GIF89a nonsense"),
             ("good2.jpg", synthetic_jpeg(seed=2))]
    assert "bad.jpg" in assert_error(gateway.upload(files), 415, "invalid_image")
    assert_nothing_stored(gateway)


def test_more_files_than_allowed_is_400(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(max_files_per_request=2)
    files = [(f"{i}.jpg", synthetic_jpeg(seed=i)) for i in range(3)]
    assert_error(gateway.upload(files), 400)
    assert_nothing_stored(gateway)


def test_request_without_files_is_422(gateway: Gateway) -> None:
    resp = gateway.client.post("/v1/images", data={"source": "x"})
    assert_error(resp, 422, "validation_error")


def test_streamed_body_over_the_request_cap_is_413_json(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(max_upload_bytes=1_000, max_files_per_request=1)
    boundary = "capsearch-test"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename=\"huge.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + b"\0" * 200_000 + f"\r\n--{boundary}--\r\n".encode()
    chunks = (body[i:i + 8192] for i in range(0, len(body), 8192))  # no Content-Length
    resp = gateway.client.post(
        "/v1/images", content=chunks,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert_error(resp, 413, "payload_too_large")
    assert resp.headers["X-Request-ID"]
    assert_nothing_stored(gateway)
