"""The request's own access-log line carries its request id (it is logged before the reset)."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.logging import request_id_var
from shared.web import install_request_context


class _Ids(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.getMessage(), request_id_var.get()))


def test_access_line_has_the_request_id_and_metrics_scrapes_are_not_logged() -> None:
    app = FastAPI()

    @app.get("/thing")
    async def thing() -> dict[str, str]:
        return {}

    @app.get("/metrics")
    async def metrics() -> dict[str, str]:
        return {}

    install_request_context(app)
    handler = _Ids()
    web_log = logging.getLogger("shared.web")
    web_log.addHandler(handler)
    web_log.setLevel(logging.INFO)
    try:
        with TestClient(app) as client:
            assert client.get("/thing", headers={"X-Request-ID": "rid-1"}).headers[
                "X-Request-ID"] == "rid-1"
            client.get("/metrics")
    finally:
        web_log.removeHandler(handler)
    assert [(m.split(" -> ")[0], rid) for m, rid in handler.seen] == [("GET /thing", "rid-1")]
