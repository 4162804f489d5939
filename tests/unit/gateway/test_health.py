"""/healthz, /readyz and the OpenAPI document."""

from __future__ import annotations

import shutil

from shared.db import make_engine, make_session_factory
from tests.unit.gateway.conftest import Gateway, assert_error


def test_healthz_is_ok(gateway: Gateway) -> None:
    resp = gateway.client.get("/healthz")
    assert resp.status_code == 200 and resp.json()["status"] == "ok"


def test_readyz_is_ok_when_database_and_blobs_answer(gateway: Gateway) -> None:
    resp = gateway.client.get("/readyz")
    assert resp.status_code == 200
    assert resp.json()["checks"] == {"database": "ok", "blob_store": "ok"}


def test_readyz_is_503_naming_a_missing_blob_store(gateway: Gateway) -> None:
    shutil.rmtree(gateway.blob_root)
    message = assert_error(gateway.client.get("/readyz"), 503, "not_ready")
    assert "blob_store" in message and "database" not in message


def test_readyz_is_503_naming_an_unreachable_database(gateway: Gateway, tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")
    gateway.context.session_factory = make_session_factory(engine)
    message = assert_error(gateway.client.get("/readyz"), 503, "not_ready")
    assert "database" in message
    engine.dispose()


def test_openapi_documents_the_public_api(gateway: Gateway) -> None:
    paths = gateway.client.get("/openapi.json").json()["paths"]
    assert {"/v1/images", "/v1/images/{image_id}", "/v1/search", "/readyz"} <= set(paths)
    assert gateway.client.get("/docs").status_code == 200
