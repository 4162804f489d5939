"""The Host a request names and cross-site writes (security probe of #17): a no-key loopback
instance answered any web page the local user visited, and any Host (DNS rebinding)."""

from __future__ import annotations

import pytest

from shared.config import Settings
from tests.unit.gateway.conftest import Gateway, GatewayFactory, assert_error, synthetic_jpeg

CROSS_SITE = [
    {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
    {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:3000"},  # another local port
    {"Origin": "https://evil.example"},  # a browser without Fetch Metadata
    {"Origin": "null"},  # a sandboxed frame or a data: page
]


@pytest.mark.parametrize("headers", CROSS_SITE)
def test_a_cross_site_form_post_to_rebuild_is_refused(gateway: Gateway,
                                                      headers: dict[str, str]) -> None:
    resp = gateway.client.post("/v1/index/rebuild", headers={
        "Content-Type": "application/x-www-form-urlencoded", **headers}, content=b"x=1")
    assert_error(resp, 403, "cross_site_request")
    assert gateway.backends.rebuilds == 0


def test_a_cross_site_multipart_upload_is_refused(gateway: Gateway) -> None:
    resp = gateway.client.post("/v1/images", headers={"Sec-Fetch-Site": "cross-site"},
                               files=[("files", ("a.jpg", synthetic_jpeg(), "image/jpeg"))])
    assert_error(resp, 403, "cross_site_request")
    assert gateway.row_count() == 0


def test_a_cross_site_delete_is_refused(gateway: Gateway) -> None:
    image_id = gateway.upload([("a.jpg", synthetic_jpeg())]).json()["images"][0]["id"]
    resp = gateway.client.delete(f"/v1/images/{image_id}",
                                 headers={"Origin": "https://evil.example"})
    assert_error(resp, 403, "cross_site_request")
    assert gateway.row_count() == 1


@pytest.mark.parametrize("headers", [
    {},  # the CLI, the Python client, curl: no browser headers
    {"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1"},
    {"Sec-Fetch-Site": "none"},  # typed into the address bar
    {"Origin": "http://127.0.0.1"},  # an older browser, same origin
])
def test_same_origin_and_non_browser_writes_pass(gateway: Gateway,
                                                 headers: dict[str, str]) -> None:
    resp = gateway.client.post("/v1/index/rebuild", headers=headers)
    assert resp.status_code == 202, resp.text


def test_a_cross_site_read_is_not_a_write(gateway: Gateway) -> None:
    resp = gateway.client.get("/v1/images", headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status_code == 200  # the browser keeps the answer from the other site (CORS)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example"])
def test_a_host_not_served_here_is_refused(gateway: Gateway, host: str) -> None:
    resp = gateway.client.get("/v1/images", headers={"Host": host})
    assert_error(resp, 400, "invalid_host")


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000"])
def test_the_loopback_names_are_served(gateway: Gateway, host: str) -> None:
    assert gateway.client.get("/v1/images", headers={"Host": host}).status_code == 200


def test_probes_answer_for_any_host(gateway: Gateway) -> None:
    assert gateway.client.get("/healthz", headers={"Host": "10.1.2.3:8000"}).status_code == 200


def test_allowed_hosts_setting_names_the_hosts(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(allowed_hosts="photos.example.com,*.lan")
    ok = {"Host": "photos.example.com"}
    assert gateway.client.get("/v1/images", headers=ok).status_code == 200
    assert gateway.client.get("/v1/images", headers={"Host": "nas.lan"}).status_code == 200
    assert_error(gateway.client.get("/v1/images"), 400, "invalid_host")  # 127.0.0.1


def test_default_hosts_follow_the_bind_address() -> None:
    from services.gateway.core.origin import allowed_hosts, host_name

    assert allowed_hosts(Settings(host="127.0.0.1")) == ["127.0.0.1", "localhost", "::1"]
    assert allowed_hosts(Settings(host="192.168.1.5"))[0] == "192.168.1.5"
    assert allowed_hosts(Settings(host="0.0.0.0")) == ["*"]
    assert host_name("[::1]:8000") == "::1" and host_name("Example.COM:80") == "example.com"
