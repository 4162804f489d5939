"""What the security probe of #17 found around the API: /docs loading Swagger UI from a CDN
on the UI's origin, /metrics open with a database count per scrape, image responses without
nosniff, thumbnails carrying the upload's comments."""

from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image

from shared.apikeys import create_key
from tests.unit.gateway.conftest import Gateway, GatewayFactory, assert_error

STATIC = Path(__file__).resolve().parents[3] / "services" / "gateway" / "ui" / "static"


def test_docs_load_nothing_from_another_origin(gateway: Gateway) -> None:
    page = gateway.client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/") and not s.startswith("//") for s in sources)
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1]
    assert "<script>" not in page.text  # no inline script for the CSP to allow
    for src in sources:
        assert gateway.client.get(src).status_code == 200, src
    assert gateway.client.get("/redoc").status_code == 404  # the CDN-only ReDoc page is gone


def test_docs_can_be_turned_off(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(api_docs=False)
    assert gateway.client.get("/docs").status_code == 404
    assert gateway.client.get("/openapi.json").status_code == 404


def test_no_script_reads_an_api_key_from_browser_storage() -> None:
    for script in STATIC.glob("*.js"):
        text = script.read_text()
        assert "localStorage" not in text and "sessionStorage" not in text, script.name


def test_metrics_need_a_key_or_the_metrics_token_when_keys_are_on(
        make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(auth={"enabled": True, "cache_s": 0},
                           metrics_token="prometheus-scrape-token-0123456789")
    assert_error(gateway.client.get("/metrics"), 401, "unauthorized")
    assert_error(gateway.client.get("/metrics", headers={"Authorization": "Bearer wrong"}),
                 401, "unauthorized")
    token = {"Authorization": "Bearer prometheus-scrape-token-0123456789"}
    assert gateway.client.get("/metrics", headers=token).status_code == 200
    key = create_key(gateway.session_factory, name="ops", scopes=["search"]).key
    resp = gateway.client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200


def test_metrics_are_rate_limited_and_count_the_database_once_per_interval(
        make_gateway: GatewayFactory, monkeypatch: object) -> None:
    from services.gateway.core import metrics

    counted = 0
    real = metrics.image_counts

    def counting(factory: object) -> dict[str, int]:
        nonlocal counted
        counted += 1
        return real(factory)  # type: ignore[arg-type]

    monkeypatch.setattr(metrics, "image_counts", counting)  # type: ignore[attr-defined]
    gateway = make_gateway(rate_limit={"enabled": True, "rate_per_s": 1, "burst": 5,
                                       "backend": "memory"})
    statuses = [gateway.client.get("/metrics").status_code for _ in range(8)]
    assert statuses[:5] == [200] * 5 and 429 in statuses
    assert counted == 1


def _gif_with_comment(comment: bytes) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, format="GIF", comment=comment)
    return out.getvalue()


def test_thumbnails_carry_no_metadata_of_the_upload(gateway: Gateway) -> None:
    script = b"<script>alert(document.cookie)</script>"
    resp = gateway.upload([("c.gif", _gif_with_comment(script))])
    assert resp.status_code == 202, resp.text
    image_id = resp.json()["images"][0]["id"]
    thumb = gateway.client.get(f"/v1/images/{image_id}/thumbnail").content
    assert b"<script>" not in thumb
    with Image.open(io.BytesIO(thumb)) as img:
        assert "comment" not in img.info and "exif" not in img.info


def test_image_responses_are_never_sniffed_or_run(gateway: Gateway) -> None:
    image_id = gateway.upload([("c.gif", _gif_with_comment(b"hi"))]).json()["images"][0]["id"]
    for kind in ("content", "thumbnail"):
        resp = gateway.client.get(f"/v1/images/{image_id}/{kind}")
        assert resp.headers["x-content-type-options"] == "nosniff", kind
        csp = resp.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "sandbox" in csp, kind
