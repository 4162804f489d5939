"""API keys at the gateway: 401 without or with a bad key, 403 with the wrong scope."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.apikeys import create_key, revoke_key
from tests.unit.gateway.conftest import Gateway, GatewayFactory, assert_error, synthetic_jpeg


@pytest.fixture
def secured(make_gateway: GatewayFactory) -> Gateway:
    return make_gateway(auth={"enabled": True, "cache_s": 0})


def key_for(gateway: Gateway, *scopes: str) -> dict[str, str]:
    issued = create_key(gateway.session_factory, name="test", scopes=scopes)
    return {"Authorization": f"Bearer {issued.key}"}


ROUTES = [
    ("get", "/v1/images", "search"),
    ("get", "/v1/images/1", "search"),
    ("get", "/v1/images/1/content", "search"),
    ("get", "/v1/images/1/thumbnail", "search"),
    ("get", "/v1/search?q=dog", "search"),
    ("delete", "/v1/images/1", "write"),
    ("post", "/v1/index/rebuild", "admin"),
]


@pytest.mark.parametrize("method, path, _scope", ROUTES)
def test_every_route_refuses_a_caller_without_a_key(secured: Gateway, method: str, path: str,
                                                    _scope: str) -> None:
    resp = secured.client.request(method, path)
    message = assert_error(resp, 401, "unauthorized")
    assert "API key" in message
    assert resp.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("method, path, scope", ROUTES)
def test_every_route_refuses_a_key_without_its_scope(secured: Gateway, method: str, path: str,
                                                     scope: str) -> None:
    others = {"search": ("write",), "write": ("search",), "admin": ("search", "write")}[scope]
    resp = secured.client.request(method, path, headers=key_for(secured, *others))
    assert_error(resp, 403, "forbidden")


def test_a_key_with_the_scope_gets_through(secured: Gateway) -> None:
    headers = key_for(secured, "search")
    assert secured.client.get("/v1/search", params={"q": "dog"}, headers=headers
                              ).status_code == 200
    assert secured.client.get("/v1/images", headers=headers).status_code == 200


def test_upload_needs_a_write_key_and_is_refused_before_storing(secured: Gateway) -> None:
    files = [("a.jpg", synthetic_jpeg())]
    assert_error(secured.upload(files), 401, "unauthorized")
    parts = [("files", ("a.jpg", synthetic_jpeg(), "image/jpeg"))]
    resp = secured.client.post("/v1/images", files=parts, headers=key_for(secured, "search"))
    assert_error(resp, 403, "forbidden")
    assert secured.row_count() == 0 and secured.blob_files() == []
    resp = secured.client.post("/v1/images", files=parts, headers=key_for(secured, "write"))
    assert resp.status_code == 202, resp.text


def test_an_unauthenticated_upload_body_is_never_read(secured: Gateway) -> None:
    reads = 0

    def body() -> Iterator[bytes]:
        nonlocal reads
        for _ in range(64):
            reads += 1
            yield b"x" * 65536

    resp = secured.client.post("/v1/images", content=body(),
                               headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert_error(resp, 401, "unauthorized")
    assert reads <= 2  # the transport may pull the first chunk; the app never asked for more


def test_admin_implies_every_scope(secured: Gateway) -> None:
    headers = key_for(secured, "admin")
    assert secured.client.post("/v1/index/rebuild", headers=headers).status_code == 202
    assert secured.client.get("/v1/search", params={"q": "cat"}, headers=headers
                              ).status_code == 200


def test_x_api_key_header_is_accepted_too(secured: Gateway) -> None:
    key = key_for(secured, "search")["Authorization"].split()[1]
    resp = secured.client.get("/v1/images", headers={"X-API-Key": key})
    assert resp.status_code == 200


@pytest.mark.parametrize("header", [
    "Bearer csk_not-a-real-key-at-all",
    "Bearer " + "csk_" + "A" * 43,
    "Basic dXNlcjpwYXNz",
    "Bearer ",
    "Bearer " + "x" * 5000,
])
def test_a_bad_key_is_401(secured: Gateway, header: str) -> None:
    resp = secured.client.get("/v1/images", headers={"Authorization": header})
    assert_error(resp, 401, "unauthorized")


def test_a_revoked_key_is_refused(secured: Gateway) -> None:
    issued = create_key(secured.session_factory, name="gone", scopes=["search"])
    headers = {"Authorization": f"Bearer {issued.key}"}
    assert secured.client.get("/v1/images", headers=headers).status_code == 200
    revoke_key(secured.session_factory, issued.info.prefix)
    assert_error(secured.client.get("/v1/images", headers=headers), 401, "unauthorized")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/docs"])
def test_probes_and_api_description_need_no_key(secured: Gateway, path: str) -> None:
    assert secured.client.get(path).status_code == 200


def test_openapi_declares_how_to_send_a_key(secured: Gateway) -> None:
    doc = secured.client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}
    responses = doc["paths"]["/v1/search"]["get"]["responses"]
    assert {"401", "403", "429"} <= set(responses)


def test_keys_off_lets_the_anonymous_caller_do_everything(make_gateway: GatewayFactory
                                                          ) -> None:
    gateway = make_gateway(auth={"enabled": False})
    assert gateway.upload([("a.jpg", synthetic_jpeg())]).status_code == 202
    assert gateway.client.post("/v1/index/rebuild").status_code == 202



def _api_routes(app: object) -> list[tuple[object, list[object]]]:
    """(APIRoute, its router's dependencies), through routers FastAPI includes lazily."""
    from fastapi.routing import APIRoute

    out: list[tuple[object, list[object]]] = []
    pending: list[tuple[object, list[object]]] = [(r, []) for r in app.routes]  # type: ignore[attr-defined]
    while pending:
        route, inherited = pending.pop()
        router = getattr(route, "original_router", None)
        if router is not None:
            pending += [(r, inherited + list(router.dependencies)) for r in router.routes]
        elif isinstance(route, APIRoute):
            out.append((route, inherited))
    return out


def _required_scopes(route: object, inherited: list[object]) -> set[str]:
    found: set[str] = set()
    stack = list(route.dependant.dependencies)  # type: ignore[attr-defined]
    names = [getattr(getattr(d, "dependency", None), "__name__", "") for d in inherited]
    found |= {n.removeprefix("require_") for n in names if n.startswith("require_")}
    while stack:
        dep = stack.pop()
        name = getattr(dep.call, "__name__", "")
        if name.startswith("require_"):
            found.add(name.removeprefix("require_"))
        stack.extend(dep.dependencies)
    return found


def test_early_scope_checks_are_the_body_routes_own_declarations(secured: Gateway) -> None:
    """The middleware checks the scope of every route that reads a body before reading it,
    and takes that scope from the route's own declaration (there is no second table)."""
    from services.gateway.api.images import upload_router
    from services.gateway.app import ROUTERS
    from services.gateway.core.auth import body_scopes

    early = {(method, b.path.pattern): b.scope
             for b in body_scopes((upload_router, *ROUTERS)) for method in b.methods}
    assert early == {("POST", "^/v1/images$"): "write",
                     ("POST", "^/v1/images/lookup$"): "search",
                     ("POST", "^/v1/search/similar$"): "search",
                     ("POST", "^/v1/imports$"): "admin",
                     ("POST", "^/similar$"): "search",
                     ("POST", "^/duplicates/delete$"): "write"}
    routes = {(m, r.path): (r, inh)  # type: ignore[attr-defined]
              for r, inh in _api_routes(secured.client.app) for m in r.methods}  # type: ignore[attr-defined]
    for (method, pattern), scope in early.items():
        path = pattern.strip("^$")
        assert _required_scopes(*routes[(method, path)]) == {scope}, (method, path)


def test_a_body_for_a_key_without_the_scope_is_never_read(secured: Gateway) -> None:
    reads = 0

    def body() -> Iterator[bytes]:
        nonlocal reads
        for _ in range(64):
            reads += 1
            yield b"x" * 65536

    resp = secured.client.post("/v1/images", content=body(),
                               headers={"Content-Type": "multipart/form-data; boundary=b",
                                        **key_for(secured, "search")})
    assert_error(resp, 403, "forbidden")
    assert reads <= 2  # the transport may pull the first chunk; the app never asked for more


def test_every_v1_route_declares_a_scope(secured: Gateway) -> None:
    routes = _api_routes(secured.client.app)
    assert len(routes) > 10
    for route, inherited in routes:
        if route.path.startswith("/v1/"):  # type: ignore[attr-defined]
            assert _required_scopes(route, inherited), f"{route.path} declares no scope"  # type: ignore[attr-defined]
