"""Per-route body caps, refused before reading: JSON routes take a small body, the similar
route one file, only the upload route many (security probe of #17)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anyio
from starlette.types import Message

from tests.unit.gateway.conftest import Gateway, GatewayFactory, assert_error

MiB = 1024 * 1024


def call_without_reading(gateway: Gateway, method: str, path: str, length: int | None,
                         content_type: str) -> tuple[int, dict[str, object], int]:
    """Send the app an endless body of 64 KiB chunks through ASGI, declaring `length` bytes
    (None: chunked, no Content-Length), with a `receive` that counts how often the app asked
    for a chunk; (status, JSON body, receive calls)."""
    app = gateway.client.app
    declared = [] if length is None else [(b"content-length", str(length).encode())]
    scope = {"type": "http", "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "root_path": "", "scheme": "http", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", content_type.encode()),
                         *declared],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80), "app": app,
             "state": {}}
    reads = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"{" * 65536, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)  # type: ignore[arg-type]
    status = next(int(m["status"]) for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), reads


def test_a_large_json_body_is_refused_before_it_is_read(gateway: Gateway) -> None:
    status, body, reads = call_without_reading(gateway, "POST", "/v1/images/lookup", 200 * MiB,
                                               "application/json")
    assert (status, body["error"]["code"], reads) == (413, "payload_too_large", 0)  # type: ignore[index]


def test_a_chunked_json_body_is_cut_off_at_the_json_cap(gateway: Gateway) -> None:
    status, body, reads = call_without_reading(gateway, "POST", "/v1/images/lookup", None,
                                               "application/json")
    assert (status, body["error"]["code"]) == (413, "payload_too_large")  # type: ignore[index]
    assert reads <= gateway.settings.max_json_bytes // 65536 + 1  # nothing past the cap


def test_a_4_mib_json_body_is_413(gateway: Gateway) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"ids": [1], "pad": "'
        yield from (b"x" * 65536 for _ in range(64))
        yield b'"}'

    resp = gateway.client.post("/v1/images/lookup", content=chunks(),
                               headers={"Content-Type": "application/json"})
    assert_error(resp, 413, "payload_too_large")


def test_the_similar_route_takes_one_file_at_the_per_file_cap(gateway: Gateway) -> None:
    status, _, reads = call_without_reading(gateway, "POST", "/v1/search/similar", 60 * MiB,
                                            "multipart/form-data; boundary=b")
    assert (status, reads) == (413, 0)
    from services.gateway.core.body_limit import body_limit

    limit = body_limit("file", gateway.settings)
    assert gateway.settings.max_upload_bytes < limit < 2 * gateway.settings.max_upload_bytes


def test_a_json_body_to_the_similar_route_gets_the_json_cap(gateway: Gateway) -> None:
    status, _, reads = call_without_reading(gateway, "POST", "/v1/search/similar", 4 * MiB,
                                            "application/json")
    assert (status, reads) == (413, 0)


def test_only_the_upload_route_takes_many_files(gateway: Gateway) -> None:
    from services.gateway.core.body_limit import body_limit

    size = body_limit("upload", gateway.settings) - 1
    status, _, _ = call_without_reading(gateway, "POST", "/v1/images/lookup", size,
                                        "application/json")
    assert status == 413
    status, _, reads = call_without_reading(gateway, "POST", "/v1/index/rebuild", size,
                                            "application/json")
    assert (status, reads) == (413, 0)


def test_json_routes_still_take_an_ordinary_body(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(max_json_bytes=64 * 1024)
    resp = gateway.client.post("/v1/images/lookup", json={"ids": list(range(1, 1001))})
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["missing"]) == 1000
