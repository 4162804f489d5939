"""Internal services (encoder, search) answer only callers holding the shared service token."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.encoder.app import create_app as create_encoder
from services.search.app import create_app as create_search
from services.search.service import IndexService
from shared.blocking import BlockingEncoder, BlockingIndex
from shared.clients import SERVICE_TOKEN_HEADER, HttpEncoderClient, HttpIndexClient
from shared.config import Settings
from shared.db import make_engine, make_session_factory
from shared.db.migrate import upgrade
from shared.errors import CapsearchError

TOKEN = "a-long-random-service-token-0123456789"


class FakeEncoder:
    name = "fake"
    dim = 3

    def load(self) -> None:
        return None

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), 3), dtype=np.float32) / np.sqrt(3)


@pytest.fixture
def encoder_client(tmp_path: Path) -> TestClient:
    settings = Settings(data_dir=tmp_path, service_token=TOKEN)
    with TestClient(create_encoder(settings, encoder=FakeEncoder())) as client:  # type: ignore[arg-type]
        yield client


@pytest.fixture
def search_client(tmp_path: Path) -> TestClient:
    settings = Settings(data_dir=tmp_path, service_token=TOKEN)
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine)
    service = IndexService(settings, make_session_factory(engine))
    service.load()
    with TestClient(create_search(settings, service=service)) as client:
        yield client
    engine.dispose()


@pytest.mark.parametrize("token", [None, "wrong-token", TOKEN[:-1]])
def test_encoder_refuses_calls_without_the_token(encoder_client: TestClient,
                                                 token: str | None) -> None:
    headers = {SERVICE_TOKEN_HEADER: token} if token else {}
    resp = encoder_client.post("/v1/encode", json={"texts": ["a dog"]}, headers=headers)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthorized"


def test_encoder_answers_the_token_holder(encoder_client: TestClient) -> None:
    resp = encoder_client.post("/v1/encode", json={"texts": ["a dog"]},
                               headers={SERVICE_TOKEN_HEADER: TOKEN})
    assert resp.status_code == 200 and resp.json()["dim"] == 3


@pytest.mark.parametrize("path", ["/v1/index/stats", "/docs", "/openapi.json"])
def test_search_refuses_calls_without_the_token(search_client: TestClient, path: str) -> None:
    assert search_client.get(path).status_code == 401
    assert search_client.get(path, headers={SERVICE_TOKEN_HEADER: TOKEN}).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_stay_open(encoder_client: TestClient, search_client: TestClient,
                          path: str) -> None:
    assert encoder_client.get(path).status_code == 200
    assert search_client.get(path).status_code == 200


def test_the_worker_s_blocking_clients_send_the_token() -> None:
    """The caption worker calls through the blocking shells; the token travels all the same."""
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get(SERVICE_TOKEN_HEADER))
        if request.url.path == "/v1/encode":
            return httpx.Response(200, json={"model": "m", "dim": 1, "vectors": [[1.0]]})
        return httpx.Response(200, json={"count": 1, "size": 1})

    transport = httpx.MockTransport(handler)
    encoder = BlockingEncoder(HttpEncoderClient("http://e", transport=transport,
                                                service_token=TOKEN))
    with_token = BlockingIndex(HttpIndexClient("http://s", transport=transport,
                                               service_token=TOKEN))
    without = BlockingIndex(HttpIndexClient("http://s", transport=transport))
    try:
        assert encoder.encode(["x"]).tolist() == [[1.0]]
        assert with_token.add([1], np.ones((1, 1), dtype=np.float32)).count == 1
        assert without.remove([1]).count == 1
    finally:
        for client in (encoder, with_token, without):
            client.close()
    assert seen == [TOKEN, TOKEN, None]


def test_the_blocking_shells_carry_the_caller_s_request_id() -> None:
    """The worker's request id (from the gateway, in a contextvar of its thread) reaches the
    encoder although the call runs on the shells' own event loop thread."""
    from shared.logging import request_id_var

    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("X-Request-ID"))
        return httpx.Response(200, json={"model": "m", "dim": 1, "vectors": [[1.0]]})

    encoder = BlockingEncoder(HttpEncoderClient("http://e",
                                                transport=httpx.MockTransport(handler)))
    token = request_id_var.set("rid-from-the-gateway")
    try:
        encoder.encode(["x"])
    finally:
        request_id_var.reset(token)
        encoder.close()
    assert seen == ["rid-from-the-gateway"]


def test_a_refused_token_surfaces_as_an_error_not_a_result() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(
        401, json={"error": {"code": "unauthorized", "message": "token"}}))
    index = BlockingIndex(HttpIndexClient("http://s", transport=transport))
    with pytest.raises(CapsearchError) as err:
        index.remove([1])
    index.close()
    assert err.value.status_code == 401
