"""Browser fixtures: an embedded capsearch (real models) behind a real HTTP server, and
Debian's Chromium driven by Playwright. Screenshots go to artifacts/screenshots/.

Chromium comes from the OS (`apt-get install chromium`), never from `playwright install`.
Where it (or the playwright package) is missing the tests skip, unless
CAPSEARCH_REQUIRE_BROWSER=1 (CI sets it) turns that into a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from capsearch.embedded import EmbeddedStack, build_embedded
from capsearch.server import BackgroundServer
from shared.config import Settings

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("CAPSEARCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-default-apps",
                 "--metrics-recording-only", "--disable-domain-reliability"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CAPSEARCH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests required but {reason}")
    pytest.skip(reason)


# module scope, never session: sync Playwright keeps an event loop running in the main thread
# while it is open, which breaks every later test that calls asyncio.run or uses TestClient
@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e .[browser])")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh embedded instance (keys and rate limits off: one local browser) on a free port."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("ui"), database_url=None,
                        blob_backend="local", auth={"enabled": False},
                        rate_limit={"enabled": False})
    stack: EmbeddedStack = build_embedded(settings)
    try:
        with BackgroundServer(stack.gateway_app()) as server:
            yield server.url
    finally:
        stack.close()


@pytest.fixture
def page(chromium: object, ui_server: str) -> Iterator[object]:
    context = chromium.new_context(base_url=ui_server,  # type: ignore[attr-defined]
                                   viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
