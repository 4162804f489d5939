"""The gateway's /metrics: request latency, images by status, caption queue depth."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.unit.gateway.collection import Photo, seed
from tests.unit.gateway.conftest import Gateway


def scrape(gateway: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = gateway.client.get("/metrics")
    assert resp.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def test_gateway_metrics_count_images_by_status_and_queue_depth(gateway: Gateway) -> None:
    seed(gateway, [Photo("a.jpg"), Photo("b.jpg"), Photo("c.jpg", status="pending")])
    gateway.queue.backlog = lambda: 7  # type: ignore[attr-defined]
    samples = scrape(gateway)
    assert samples[("capsearch_images", (("status", "indexed"),))] == 2
    assert samples[("capsearch_images", (("status", "pending"),))] == 1
    assert samples[("capsearch_images", (("status", "failed"),))] == 0
    assert samples[("capsearch_caption_queue_depth", ())] == 7
    assert samples[("capsearch_ocr_waiting", ())] == 2  # indexed, text not read yet


def test_gateway_metrics_time_routes_by_template(gateway: Gateway) -> None:
    seed(gateway, [Photo("a.jpg")])
    gateway.client.get("/v1/images/1")
    samples = scrape(gateway)
    key = ("capsearch_http_request_duration_seconds_count",
           (("method", "GET"), ("route", "/v1/images/{image_id}"), ("service", "gateway"),
            ("status", "200")))
    assert samples[key] >= 1
