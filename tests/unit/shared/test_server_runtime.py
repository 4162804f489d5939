"""The services' uvicorn runs on the C HTTP parser and the libuv event loop (dependencies
chosen for their CPU per request, docs/benchmarks.md), not on the pure-Python fallbacks."""

from __future__ import annotations

import sys

import pytest
import uvicorn


def test_uvicorn_picks_httptools_and_uvloop_as_the_services_run_it() -> None:
    config = uvicorn.Config(app=lambda *_: None, log_config=None, proxy_headers=True)
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
    if sys.platform == "win32":
        pytest.skip("uvloop does not exist on Windows")
    import uvloop

    assert config.get_loop_factory() is uvloop.new_event_loop
