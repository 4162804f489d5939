"""create_app without a context: the lifespan builds the production one and closes it."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.core.body_limit import upload_body_limit
from services.gateway.core.context import GatewayContext
from services.gateway.querycache import CachedTextEncoder
from shared.clients import HttpEncoderClient, HttpIndexClient
from shared.config import Settings
from shared.queue import CeleryCaptionQueue
from shared.storage import LocalBlobStore


def test_lifespan_builds_the_production_context_from_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "state")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        context = client.app.state.context  # type: ignore[attr-defined]
        assert isinstance(context, GatewayContext)
        assert isinstance(context.store, LocalBlobStore)
        # the encoder client sits behind the query-vector cache
        assert isinstance(context.encoder, CachedTextEncoder)
        assert isinstance(context.encoder.inner, HttpEncoderClient)
        assert context.encoder.model == settings.embedding_model
        assert isinstance(context.index, HttpIndexClient)
        assert isinstance(context.queue, CeleryCaptionQueue)
        assert client.get("/readyz").status_code == 200
    assert (tmp_path / "state" / "capsearch.db").is_file()


def test_upload_body_limit_allows_every_file_at_its_cap() -> None:
    settings = Settings(max_upload_bytes=1_000, max_files_per_request=3)
    assert upload_body_limit(settings) > 3 * 1_000
