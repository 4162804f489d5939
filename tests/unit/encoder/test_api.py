"""The encoder service over HTTP (TestClient, tiny injected encoder)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.encoder.app import create_app
from services.encoder.encoder import BertTextEncoder, TextEncoder
from services.encoder.routes import MAX_TEXT_CHARS
from shared.config import Settings


@pytest.fixture
def client(tiny_encoder: BertTextEncoder) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(), encoder=tiny_encoder)) as test_client:
        yield test_client


class GatedEncoder(TextEncoder):
    """An encoder whose loading waits for a gate (or fails), to observe readiness."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__(name="gated")
        self.gate = threading.Event()
        self.fail = fail

    def _load(self) -> None:
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("weights are corrupt")
        self.dim = 3

    def _encode(self, batch: list[str]) -> np.ndarray:
        return np.tile(np.array([1.0, 0.0, 0.0], dtype=np.float32), (len(batch), 1))


def test_encode_returns_one_unit_vector_per_text(client: TestClient) -> None:
    resp = client.post("/v1/encode", json={"texts": ["a dog", "a cat on a red car"]})
    assert resp.status_code == 200
    body = resp.json()
    assert (body["model"], body["dim"]) == ("tiny-bert", 32)
    vectors = np.array(body["vectors"])
    assert vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_encode_echoes_the_request_id(client: TestClient) -> None:
    resp = client.post("/v1/encode", json={"texts": ["a dog"]}, headers={"X-Request-ID": "r-1"})
    assert resp.headers["X-Request-ID"] == "r-1"


@pytest.mark.parametrize("body", [
    {"texts": "a dog"},
    {"texts": [1, 2]},
    {"texts": [None]},
    {"texts": []},
    {"text": ["a dog"]},
    {"texts": ["a dog"] * 1025},
    {"texts": ["a" * (MAX_TEXT_CHARS + 1)]},
], ids=["not-a-list", "numbers", "null", "empty", "wrong-field", "too-many", "too-long"])
def test_bad_bodies_are_422_with_the_error_shape(client: TestClient, body: object) -> None:
    resp = client.post("/v1/encode", json=body)
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["code"] == "validation_error"
    assert error["message"]


def test_a_body_that_is_not_json_is_422(client: TestClient) -> None:
    resp = client.post("/v1/encode", content=b"{not json",
                       headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "validation_error"


def test_healthz_answers(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}


def test_readyz_is_200_once_the_model_is_loaded(client: TestClient) -> None:
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ready"


def test_readyz_is_503_while_the_model_loads() -> None:
    encoder = GatedEncoder()
    with TestClient(create_app(Settings(), encoder=encoder)) as client:
        resp = client.get("/readyz")
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "model_not_ready"
        assert client.get("/healthz").status_code == 200
        encoder.gate.set()
        assert client.post("/v1/encode", json={"texts": ["x"]}).status_code == 200
        assert client.get("/readyz").status_code == 200


def test_a_model_that_fails_to_load_gives_503s() -> None:
    encoder = GatedEncoder(fail=True)
    encoder.gate.set()
    with TestClient(create_app(Settings(), encoder=encoder)) as client:
        resp = client.post("/v1/encode", json={"texts": ["x"]})
        assert resp.status_code == 503
        assert "weights are corrupt" in resp.json()["error"]["message"]
        assert client.get("/readyz").status_code == 503
