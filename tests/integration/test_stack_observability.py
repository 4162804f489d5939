"""Observability of the running stack: /metrics scraped on every service (the worker on its
own port) and a request id that travels from the gateway into the caption worker's logs."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from capsearch.client import CapsearchClient
from shared.clients import SERVICE_TOKEN_HEADER
from tests.integration.conftest import SERVICE_TOKEN, RunningStack
from tests.unit.gateway.conftest import synthetic_jpeg

pytestmark = pytest.mark.integration


def upload_fresh(stack: RunningStack, request_id: str) -> int:
    """A never-seen photo through the gateway, with our request id; waits until indexed."""
    with httpx.Client(base_url=stack.url, timeout=60,
                      headers={"Authorization": f"Bearer {stack.api_key}",
                               "X-Request-ID": request_id}) as http:
        resp = http.post("/v1/images", files=[("files", ("fresh.jpg",
                                                         synthetic_jpeg((96, 72), seed=5),
                                                         "image/jpeg"))])
        assert resp.status_code == 202, resp.text
        assert resp.headers["X-Request-ID"] == request_id
        image_id = int(resp.json()["images"][0]["id"])
    with CapsearchClient(stack.url) as client:
        final = client.wait_indexed([image_id], timeout=300)
    assert final[image_id].status == "indexed", final[image_id].error
    return image_id


def scrape(url: str, headers: dict[str, str]) -> dict[str, list[tuple[dict[str, str], float]]]:
    resp = httpx.get(url, headers=headers, timeout=30)
    assert resp.status_code == 200, f"{url}: {resp.status_code} {resp.text[:200]}"
    assert resp.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str,
          **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if labels.items() <= lab.items())


def test_every_service_serves_prometheus_metrics(stack: RunningStack) -> None:
    upload_fresh(stack, uuid.uuid4().hex[:16])
    with CapsearchClient(stack.url) as client:
        client.search("a photo", k=3)
    settings = stack.settings
    token = {SERVICE_TOKEN_HEADER: SERVICE_TOKEN}

    gateway = scrape(f"{stack.url}/metrics", {"Authorization": f"Bearer {stack.api_key}"})
    assert value(gateway, "capsearch_images", status="indexed") >= 1
    assert "capsearch_caption_queue_depth" in gateway
    assert value(gateway, "capsearch_http_request_duration_seconds_count", service="gateway",
                 route="/v1/search", status="200") >= 1

    encoder = scrape(f"{settings.encoder_url}/metrics", token)
    assert value(encoder, "capsearch_stage_duration_seconds_count",
                 stage="text_encoder_forward") >= 1
    assert value(encoder, "capsearch_http_request_duration_seconds_count", service="encoder",
                 route="/v1/encode") >= 1

    search = scrape(f"{settings.search_url}/metrics", token)
    assert value(search, "capsearch_index_vectors") >= 1
    assert "capsearch_index_version" in search
    assert value(search, "capsearch_http_request_duration_seconds_count", service="search",
                 route="/v1/search") >= 1

    worker = scrape(f"http://127.0.0.1:{settings.worker_metrics_port}/metrics", {})
    for stage in ("read", "decode", "caption", "encode", "store", "index"):
        assert value(worker, "capsearch_stage_duration_seconds_count", stage=stage) >= 1, stage
    assert value(worker, "capsearch_caption_images_total", outcome="indexed") >= 1


def test_the_request_id_travels_from_the_gateway_into_the_worker_logs(
        stack: RunningStack) -> None:
    request_id = f"it-{uuid.uuid4().hex[:12]}"
    upload_fresh(stack, request_id)

    def records(service: str) -> list[dict[str, object]]:
        lines = stack.process(service).log_path.read_text(errors="replace").splitlines()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line from a library that bypasses logging
        return out

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the worker's end-of-task line lands just after
        ours = [r for r in records("caption") if r.get("request_id") == request_id]
        if any("caption batch" in str(r["msg"]) for r in ours):
            break
        time.sleep(0.5)
    assert ours, "no caption worker log line carries the request id"
    assert any("caption batch" in str(r["msg"]) for r in ours), ours
    assert {"ts", "level", "logger", "msg", "request_id"} <= set(ours[0])
    assert any(r.get("request_id") == request_id for r in records("gateway"))
