"""The web UI's photo features in a real browser, on an embedded instance of their own (its
photos would change the shared instance's counts): drop or choose a photo on the search page
to find photos like it; review a near-duplicate group and delete the extra."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from capsearch.client import CapsearchClient
from tests.browser.conftest import UiServer, embedded_ui, new_page
from tests.browser.test_web_ui import drop_files, sample

pytestmark = pytest.mark.browser


def smaller_copy(path: Path) -> bytes:
    """The acceptance edit: 60 % of the size, JPEG quality 70."""
    image = Image.open(path).convert("RGB")
    image = image.resize((round(image.width * 0.6), round(image.height * 0.6)),
                         Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=70)
    return out.getvalue()


@pytest.fixture(scope="module")
def photos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    """Three photos and a smaller copy of one of them, indexed."""
    folder = tmp_path_factory.mktemp("photos")
    copy = folder / "coffee-copy.jpg"
    copy.write_bytes(smaller_copy(sample("coffee")))
    with embedded_ui(tmp_path_factory.mktemp("photos-ui")) as server, \
            CapsearchClient(server.url, api_key=server.key) as client:
        items = client.upload([sample("chelsea"), sample("coffee"), sample("rocket"), copy])
        final = client.wait_indexed([i.id for i in items], timeout=240)
        assert {r.status for r in final.values()} == {"indexed"}
        yield server


@pytest.fixture
def photos_page(chromium: Any, photos_server: UiServer) -> Iterator[Any]:
    page = new_page(chromium, photos_server)
    yield page
    page.context.close()


def test_a_photo_dropped_on_the_search_page_finds_photos_like_it(
        photos_page: Any, screenshots: Path) -> None:
    page = photos_page
    page.goto("/")
    drop_files(page, "#photo-drop", [sample("astronaut")])  # not in the collection
    page.wait_for_url(re.compile(r"/similar$"))
    assert page.locator("h1").text_content().strip() == "Photos like your photo"
    assert page.locator("#results .card").count() == 4
    page.screenshot(path=str(screenshots / "10-similar-by-dropped-photo.png"), full_page=True)


def test_a_chosen_photo_finds_photos_like_it(photos_page: Any) -> None:
    page = photos_page
    page.goto("/")
    page.get_by_label(re.compile("find photos like one of yours")).set_input_files(
        str(sample("motorcycle_left")))
    page.wait_for_url(re.compile(r"/similar$"))
    assert page.locator("#results .card").count() == 4


def test_the_duplicates_page_shows_the_copy_beside_its_original_and_deletes_it(
        photos_page: Any, screenshots: Path) -> None:
    page = photos_page
    page.goto("/duplicates")
    group = page.locator(".duplicate-group")
    assert group.count() == 1
    assert group.locator("img").count() == 2
    page.screenshot(path=str(screenshots / "11-duplicates.png"), full_page=True)
    names = group.locator(".card .meta").all_text_contents()
    copy = next(n for n, text in enumerate(names) if "coffee-copy.jpg" in text)
    group.locator(".card").nth(copy).get_by_role("checkbox").check()
    group.get_by_role("button", name="Delete the ticked photos").click()
    page.wait_for_url(re.compile(r"/duplicates\?deleted=1$"))
    assert "1 photo deleted" in page.locator("#duplicates-status").text_content()
    assert page.locator(".duplicate-group").count() == 0
