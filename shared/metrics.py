"""Prometheus metrics every capsearch process shares, and `/metrics` for its FastAPI app.

Series are module-level (one default registry per process). What is cheap to count is counted
where it happens (request latency, stage latency); what is a property of the collection (images
by status, queue depth, index size) is read when Prometheus scrapes, by the app's `collect`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUEST_SECONDS = Histogram(
    "capsearch_http_request_duration_seconds", "HTTP request latency by route template",
    ["service", "method", "route", "status"], buckets=LATENCY_BUCKETS)
STAGE_SECONDS = Histogram(
    "capsearch_stage_duration_seconds",
    "Per-stage latency: caption pipeline stages per batch, text-encoder forward passes",
    ["stage"], buckets=LATENCY_BUCKETS)
CAPTIONED_IMAGES = Counter(
    "capsearch_caption_images_total", "Images through caption batches, by outcome", ["outcome"])
IMAGES = Gauge("capsearch_images", "Images in the database by status", ["status"])
QUEUE_DEPTH = Gauge(
    "capsearch_caption_queue_depth",
    "Caption work waiting: Celery task messages on the Redis list (embedded: image ids)")
OCR_WAITING = Gauge(
    "capsearch_ocr_waiting", "Indexed photos whose text (OCR stage) has not been read yet")
INDEX_VECTORS = Gauge("capsearch_index_vectors", "Vectors in the serving index")
INDEX_VERSION = Gauge("capsearch_index_version",
                      "Active fitted index version (0: none fitted, exact search)")
INDEX_CLUSTERS = Gauge("capsearch_index_clusters", "Clusters of the serving index (0: exact)")
IMPORTED_FILES = Counter("capsearch_import_files_total", "Files seen by bulk imports, by outcome",
                         ["outcome"])

Collect = Callable[[], Awaitable[None]]
UNMATCHED_ROUTE = "unmatched"


def observe_stage(stage: str, seconds: float) -> None:
    STAGE_SECONDS.labels(stage).observe(seconds)


def observe_batch(timings: Mapping[str, float], *, indexed: int, failed: int,
                  skipped: int) -> None:
    """The hook for one caption batch: each stage's seconds and the images by outcome."""
    for stage, seconds in timings.items():
        STAGE_SECONDS.labels(stage).observe(seconds)
    for outcome, count in (("indexed", indexed), ("failed", failed), ("skipped", skipped)):
        if count:
            CAPTIONED_IMAGES.labels(outcome).inc(count)


def set_image_counts(counts: Mapping[str, int], statuses: list[str]) -> None:
    """Every known status gets a value, so one that emptied drops to 0 instead of vanishing."""
    for status in set(statuses) | set(counts):
        IMAGES.labels(status).set(counts.get(status, 0))


def set_index_stats(*, size: int, version: int | None, clusters: int) -> None:
    INDEX_VECTORS.set(size)
    INDEX_VERSION.set(version or 0)
    INDEX_CLUSTERS.set(clusters)


class RequestMetrics:
    """Pure ASGI middleware: one latency observation per HTTP request, labelled by the route
    template (`/v1/images/{image_id}`), never the raw path, so ids do not explode the series."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            REQUEST_SECONDS.labels(self.service, scope["method"], route,
                                   str(status)).observe(time.perf_counter() - start)


def install_metrics(app: FastAPI, service: str, collect: Collect | None = None) -> None:
    """Time every request and serve `GET /metrics` (after refreshing the scrape-time gauges)."""
    app.add_middleware(RequestMetrics, service=service)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        if collect is not None:
            try:
                await collect()
            except Exception as exc:  # a dead dependency must not hide the other series
                log.warning("collecting scrape-time metrics failed: %s", exc)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def start_metrics_server(port: int | None, host: str = "127.0.0.1") -> bool:
    """Serve the registry on its own port (the Celery worker has no web app); False if off or
    the port is taken (a second worker on one host), which is logged, never fatal."""
    if not port:
        return False
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("metrics port %s:%d unavailable: %s", host, port, exc)
        return False
    log.info("metrics on http://%s:%d/metrics", host, port)
    return True
