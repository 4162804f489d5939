"""shared.metrics: request latency by route template, the batch hook, the worker's port."""

from __future__ import annotations

import socket

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from capsearch.server import free_port
from shared.metrics import install_metrics, observe_batch, start_metrics_server


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_requests_are_timed_by_route_template_not_raw_path() -> None:
    app = FastAPI()

    @app.get("/things/{thing_id}")
    async def thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    install_metrics(app, "unit")
    labels = {"service": "unit", "method": "GET", "route": "/things/{thing_id}",
              "status": "200"}
    before = sample("capsearch_http_request_duration_seconds_count", **labels)
    with TestClient(app) as client:
        client.get("/things/1")
        client.get("/things/2")
        client.get("/nowhere")
        body = client.get("/metrics")
    assert body.status_code == 200
    assert body.headers["content-type"].startswith("text/plain")
    assert sample("capsearch_http_request_duration_seconds_count", **labels) == before + 2
    assert sample("capsearch_http_request_duration_seconds_count", service="unit",
                  method="GET", route="unmatched", status="404") >= 1
    assert 'route="/things/1"' not in body.text


def test_metrics_collect_runs_at_scrape_and_a_failure_does_not_break_it() -> None:
    app = FastAPI()
    calls: list[int] = []

    async def collect() -> None:
        calls.append(1)
        raise RuntimeError("the database is down")

    install_metrics(app, "unit2", collect=collect)
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 200
    assert calls == [1]


def test_batch_hook_observes_every_stage_and_outcome() -> None:
    before = sample("capsearch_stage_duration_seconds_count", stage="caption")
    indexed = sample("capsearch_caption_images_total", outcome="indexed")
    observe_batch({"caption": 0.5, "encode": 0.1}, indexed=3, failed=0, skipped=1)
    assert sample("capsearch_stage_duration_seconds_count", stage="caption") == before + 1
    assert sample("capsearch_caption_images_total", outcome="indexed") == indexed + 3


def test_worker_metrics_port_serves_the_registry_and_a_taken_port_is_not_fatal() -> None:
    port = free_port()
    assert start_metrics_server(port, "127.0.0.1")
    assert "capsearch_stage_duration_seconds" in httpx.get(
        f"http://127.0.0.1:{port}/metrics").text
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert not start_metrics_server(taken.getsockname()[1], "127.0.0.1")
    assert not start_metrics_server(None)
