"""The encoder's /metrics: request latency and the model's forward-pass latency."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from services.encoder.app import create_app
from services.encoder.encoder import BertTextEncoder
from shared.config import Settings


def test_encoder_metrics_time_requests_and_forward_passes(tiny_encoder: BertTextEncoder
                                                          ) -> None:
    def forward_count() -> float:
        return REGISTRY.get_sample_value("capsearch_stage_duration_seconds_count",
                                         {"stage": "text_encoder_forward"}) or 0.0

    before = forward_count()
    with TestClient(create_app(Settings(), encoder=tiny_encoder)) as client:
        assert client.post("/v1/encode", json={"texts": ["a dog", "a cat"]}).status_code == 200
        text = client.get("/metrics").text
    assert forward_count() > before
    assert 'route="/v1/encode"' in text and 'service="encoder"' in text
