"""The search service's /metrics: index size, version and request latency."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from services.search.app import create_app
from services.search.service import IndexService
from shared.config import Settings
from tests.unit.search.conftest import DIM, StoreVectors, clustered


def test_search_metrics_report_the_serving_index(settings: Settings, service: IndexService,
                                                 store_vectors: StoreVectors) -> None:
    store_vectors(clustered(30, DIM))
    service.load()
    with TestClient(create_app(settings, service)) as client:
        client.post("/v1/search", json={"vector": np.ones(DIM).tolist(), "k": 3})
        text = client.get("/metrics").text
    assert "capsearch_index_vectors 30.0" in text
    assert "capsearch_index_version 0.0" in text  # exact search: no fitted version
    assert REGISTRY.get_sample_value("capsearch_http_request_duration_seconds_count", {
        "service": "search", "method": "POST", "route": "/v1/search", "status": "200"}) >= 1
