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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from capsearch.embedded import EmbeddedStack, build_embedded
from capsearch.server import BackgroundServer
from shared.apikeys import create_key
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


@dataclass(frozen=True)
class UiServer:
    """The embedded instance the browser talks to, and a key that may search and upload."""

    url: str
    key: str


@contextmanager
def embedded_ui(data_dir: Path) -> Iterator[UiServer]:
    """A fresh embedded instance with API keys ON (the browser signs in at /sign-in), rate
    limits off (one local browser), on a free port."""
    settings = Settings(data_dir=data_dir, database_url=None,
                        blob_backend="local", auth={"enabled": True},
                        rate_limit={"enabled": False})
    stack: EmbeddedStack = build_embedded(settings)
    try:
        key = create_key(stack.session_factory, name="browser tests",
                         scopes=["search", "write"]).key
        with BackgroundServer(stack.gateway_app(require_keys=True)) as server:
            yield UiServer(url=server.url, key=key)
    finally:
        stack.close()


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    """The embedded instance most browser tests share."""
    with embedded_ui(tmp_path_factory.mktemp("ui")) as server:
        yield server


def sign_in(page: Any, key: str) -> None:
    """What a person does: the sign-in form, a key pasted, Enter; back on the search page."""
    page.goto("/sign-in")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")


def new_page(chromium: Any, ui_server: UiServer, *, signed_in: bool = True) -> Any:
    context = chromium.new_context(base_url=ui_server.url,
                                   viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    if signed_in:
        sign_in(page, ui_server.key)
    return page


@pytest.fixture
def page(chromium: object, ui_server: UiServer) -> Iterator[object]:
    """A signed-in browser tab."""
    page = new_page(chromium, ui_server)
    yield page
    page.context.close()


@pytest.fixture
def anonymous_page(chromium: object, ui_server: UiServer) -> Iterator[object]:
    """A browser tab that has not signed in."""
    page = new_page(chromium, ui_server, signed_in=False)
    yield page
    page.context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
