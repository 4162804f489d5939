"""The auth seam: routes declare scopes; get_principal decides who the caller is."""

from __future__ import annotations

from services.gateway.core.auth import Principal, get_principal
from tests.unit.gateway.conftest import Gateway, assert_error, synthetic_jpeg


def as_principal(gateway: Gateway, *scopes: str) -> None:
    async def reader() -> Principal:
        return Principal(name="reader", scopes=frozenset(scopes))

    gateway.client.app.dependency_overrides[get_principal] = reader  # type: ignore[attr-defined]


def test_anonymous_caller_may_upload_and_search(gateway: Gateway) -> None:
    assert gateway.upload([("a.jpg", synthetic_jpeg())]).status_code == 202
    assert gateway.client.get("/v1/search", params={"q": "dog"}).status_code == 200


def test_principal_without_write_scope_cannot_upload(gateway: Gateway) -> None:
    as_principal(gateway, "search")
    assert_error(gateway.upload([("a.jpg", synthetic_jpeg())]), 403, "forbidden")
    assert gateway.row_count() == 0


def test_principal_without_admin_scope_cannot_rebuild(gateway: Gateway) -> None:
    as_principal(gateway, "search", "write")
    assert_error(gateway.client.post("/v1/index/rebuild"), 403, "forbidden")
    assert gateway.backends.rebuilds == 0


def test_principal_without_search_scope_cannot_search(gateway: Gateway) -> None:
    as_principal(gateway, "write")
    assert_error(gateway.client.get("/v1/search", params={"q": "dog"}), 403, "forbidden")
