"""Browser sign-in with keys on (#17 item 3): /sign-in sets a signed session cookie, UI pages
without one go to /sign-in, API routes keep their JSON 401, revoking the key or the cookie's
lifetime ends the session."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner

from services.gateway.app import create_app
from services.gateway.core.sessions import COOKIE_NAME, SECRET_FILE
from shared.apikeys import create_key, revoke_key
from shared.config import Settings
from tests.unit.gateway.conftest import Gateway, GatewayFactory, assert_error


@pytest.fixture
def secured(make_gateway: GatewayFactory) -> Gateway:
    return make_gateway(auth={"enabled": True, "cache_s": 0})


def new_key(gateway: Gateway, *scopes: str) -> str:
    return create_key(gateway.session_factory, name="browser", scopes=scopes or ("search",)).key


def sign_in(gateway: Gateway, key: str, next_url: str = "/") -> None:
    resp = gateway.client.post("/sign-in", data={"api_key": key, "next": next_url},
                               follow_redirects=False)
    assert resp.status_code == 303, resp.text


def test_ui_pages_without_a_session_go_to_sign_in(secured: Gateway) -> None:
    resp = secured.client.get("/", follow_redirects=False)
    assert (resp.status_code, resp.headers["location"]) == (303, "/sign-in")
    resp = secured.client.get("/similar/7?x=1", follow_redirects=False)
    assert (resp.status_code, resp.headers["location"]) == (
        303, "/sign-in?next=%2Fsimilar%2F7%3Fx%3D1")
    assert_error(secured.client.get("/v1/images"), 401, "unauthorized")  # the API: JSON 401


def test_signing_in_with_a_key_gives_search_result_pages(secured: Gateway) -> None:
    form = secured.client.get("/sign-in?next=/upload")
    assert form.status_code == 200 and 'name="api_key"' in form.text
    assert 'value="/upload"' in form.text
    resp = secured.client.post("/sign-in", data={"api_key": new_key(secured, "search", "write"),
                                                 "next": "/?q=dog"}, follow_redirects=False)
    assert (resp.status_code, resp.headers["location"]) == (303, "/?q=dog")
    cookie = resp.headers["set-cookie"].lower()
    assert cookie.startswith(f"{COOKIE_NAME}=") and "httponly" in cookie
    assert "samesite=lax" in cookie and "secure" not in cookie  # plain http here
    page = secured.client.get("/?q=dog")
    assert page.status_code == 200 and 'id="results' in page.text and "Sign out" in page.text
    assert secured.backends.encoded[-1] == ["dog"]
    assert secured.client.get("/v1/images").status_code == 200  # what the UI's script calls


def test_a_bad_key_or_one_that_cannot_search_is_refused(secured: Gateway) -> None:
    resp = secured.client.post("/sign-in", data={"api_key": "csk_" + "x" * 43})
    assert resp.status_code == 401 and "not valid" in resp.text
    assert COOKIE_NAME not in resp.headers.get("set-cookie", "")
    resp = secured.client.post("/sign-in", data={"api_key": new_key(secured, "write")})
    assert resp.status_code == 403 and "search scope" in resp.text


def test_revoking_the_key_ends_the_session(secured: Gateway) -> None:
    key = new_key(secured)
    sign_in(secured, key)
    assert secured.client.get("/", follow_redirects=False).status_code == 200
    revoke_key(secured.session_factory, key[:12])
    assert secured.client.get("/", follow_redirects=False).status_code == 303
    assert_error(secured.client.get("/v1/images"), 401, "unauthorized")


def test_a_session_ends_after_its_lifetime(secured: Gateway,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    sign_in(secured, new_key(secured))
    assert secured.client.get("/", follow_redirects=False).status_code == 200
    later = int(time.time() + secured.settings.auth.session_lifetime_s + 60)
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: later)
    assert secured.client.get("/", follow_redirects=False).status_code == 303


def test_signing_out_clears_the_session(secured: Gateway) -> None:
    sign_in(secured, new_key(secured))
    resp = secured.client.post("/sign-out", follow_redirects=False)
    assert (resp.status_code, resp.headers["location"]) == (303, "/sign-in")
    assert secured.client.get("/", follow_redirects=False).status_code == 303


def test_a_tampered_cookie_is_no_session(secured: Gateway) -> None:
    sign_in(secured, new_key(secured))
    value = secured.client.cookies[COOKIE_NAME]
    secured.client.cookies.clear()
    secured.client.cookies.set(COOKIE_NAME, value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
    assert secured.client.get("/", follow_redirects=False).status_code == 303


def test_sign_in_goes_back_only_to_this_site(secured: Gateway) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        resp = secured.client.post("/sign-in", data={"api_key": new_key(secured),
                                                     "next": target}, follow_redirects=False)
        assert resp.headers["location"] == "/", target


def test_a_cross_site_sign_in_or_upload_with_the_cookie_is_refused(secured: Gateway) -> None:
    resp = secured.client.post("/sign-in", data={"api_key": new_key(secured)},
                               headers={"Sec-Fetch-Site": "cross-site"})
    assert_error(resp, 403, "cross_site_request")
    sign_in(secured, new_key(secured, "search", "write"))
    resp = secured.client.post("/v1/images", headers={"Origin": "https://evil.example"},
                               files=[("files", ("a.jpg", b"x", "image/jpeg"))])
    assert_error(resp, 403, "cross_site_request")


def test_the_cookie_is_secure_over_https(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(auth={"enabled": True, "cache_s": 0})
    with TestClient(gateway.client.app, base_url="https://127.0.0.1") as client:
        resp = client.post("/sign-in", data={"api_key": new_key(gateway)},
                           follow_redirects=False)
    assert resp.status_code == 303 and "secure" in resp.headers["set-cookie"].lower()


def test_without_keys_sign_in_leads_to_the_ui(gateway: Gateway) -> None:
    resp = gateway.client.get("/sign-in", follow_redirects=False)
    assert (resp.status_code, resp.headers["location"]) == (303, "/")
    assert gateway.client.get("/", follow_redirects=False).status_code == 200


def test_development_keeps_its_secret_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, auth={"enabled": True})
    create_app(settings)
    first = (tmp_path / SECRET_FILE).read_text()
    create_app(settings)
    assert (tmp_path / SECRET_FILE).read_text() == first and len(first) >= 32
    assert (tmp_path / SECRET_FILE).stat().st_mode & 0o077 == 0


def test_production_needs_a_session_secret(tmp_path: Path) -> None:
    token = "0123456789abcdef0123456789abcdef"
    settings = Settings(data_dir=tmp_path, environment="production", service_token=token)
    with pytest.raises(ValueError, match="SESSION_SECRET"):
        create_app(settings)
    create_app(Settings(data_dir=tmp_path, environment="production", service_token=token,
                        auth={"session_secret": "a" * 32}))


def test_a_plain_http_client_with_a_cookie_jar_signs_in_over_tcp(secured: Gateway) -> None:
    """The done-when line of #17: an HTTP client (httpx, its cookie jar) against a real
    server signs in at /sign-in and gets search result pages."""
    import httpx

    from capsearch.server import BackgroundServer

    key = new_key(secured)
    with BackgroundServer(secured.client.app) as server, \
            httpx.Client(base_url=server.url) as browser:
        assert browser.get("/?q=dog").status_code == 303  # not yet: to /sign-in
        signed = browser.post("/sign-in", data={"api_key": key, "next": "/?q=dog"},
                              follow_redirects=True)
        assert signed.status_code == 200 and signed.url.path == "/"
        assert 'id="results' in signed.text and "dog" in signed.text
        assert COOKIE_NAME in browser.cookies


def test_sign_in_attempts_spend_the_address_rate_limit(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(auth={"enabled": True, "cache_s": 0},
                           rate_limit={"enabled": True, "rate_per_s": 0.01, "burst": 3,
                                       "backend": "memory"})
    codes = [gateway.client.post("/sign-in", data={"api_key": f"csk_guess{i}"}).status_code
             for i in range(5)]
    assert codes[:3] == [401] * 3 and codes[3:] == [429, 429]
