"""The web UI in a real browser: drag-and-drop upload, search, filters, sort, find similar,
the image page, and keyboard/screen-reader basics. Screenshots: artifacts/screenshots/."""

from __future__ import annotations

import base64
import mimetypes
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capsearch.files import bundled_sample_photos
from tests.browser.conftest import UiServer, new_page

pytestmark = pytest.mark.browser

TRIP, HOME = "/ui/trip", "/ui/home"
INDEXED_TIMEOUT_MS = 240_000


def sample(name: str) -> Path:
    found = [p for p in bundled_sample_photos() if p.stem == name]
    if not found:
        pytest.skip(f"sample photo {name} is not installed")
    return found[0]


def drop_files(page: Any, selector: str, files: list[Path]) -> None:
    """What a user's drag and drop does: a `drop` event whose DataTransfer holds the files."""
    payload = [{"name": p.name, "type": mimetypes.guess_type(p.name)[0] or "image/jpeg",
                "b64": base64.b64encode(p.read_bytes()).decode()} for p in files]
    transfer = page.evaluate_handle("""(files) => {
        const dt = new DataTransfer();
        for (const f of files) {
            const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
            dt.items.add(new File([bytes], f.name, { type: f.type }));
        }
        return dt;
    }""", payload)
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


@pytest.fixture(scope="module")
def uploaded(chromium: Any, ui_server: UiServer, screenshots: Path
             ) -> Iterator[dict[str, str]]:
    """Five photos uploaded through the upload page (three dropped, two chosen), indexed."""
    page = new_page(chromium, ui_server)
    context = page.context
    page.goto("/upload")
    page.get_by_label("Folder or album").fill(TRIP)
    drop_files(page, "#dropzone", [sample("chelsea"), sample("coffee"), sample("rocket")])
    page.wait_for_function("document.querySelectorAll('#upload-list li').length === 3")
    page.get_by_label("Folder or album").fill(HOME)
    page.get_by_label("Photos to upload").set_input_files(
        [str(sample("astronaut")), str(sample("motorcycle_left"))])
    page.wait_for_function(
        "() => { const items = [...document.querySelectorAll('#upload-list li')];"
        " return items.length === 5 && items.every((li) => li.dataset.state === 'indexed'); }",
        timeout=INDEXED_TIMEOUT_MS)
    page.screenshot(path=str(screenshots / "01-upload-done.png"), full_page=True)
    states = page.eval_on_selector_all(
        "#upload-list li", "items => items.map((li) => [li.querySelector('.name').textContent,"
        " li.querySelector('progress').value, li.querySelector('.status').textContent])")
    status_line = page.locator("#upload-status").text_content()
    context.close()
    yield {"states": states, "status": status_line}


def test_drag_and_drop_upload_shows_progress_and_status_per_file(
        uploaded: dict[str, Any]) -> None:
    names = [name for name, _, _ in uploaded["states"]]
    assert sorted(names) == sorted(["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png",
                                    "motorcycle_left.png"])
    assert all(progress == 100 for _, progress, _ in uploaded["states"])
    assert all(status.startswith("indexed: ") for _, _, status in uploaded["states"])
    assert "5 of 5 photos done" in uploaded["status"]


def test_search_shows_a_grid_with_caption_and_score(page: Any, uploaded: dict[str, Any],
                                                    screenshots: Path) -> None:
    page.goto("/")
    page.get_by_label("Describe the photo").fill("a cat")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"q=a\+cat"))
    cards = page.locator("#results .card")
    assert cards.count() == 5
    first = cards.nth(0)
    assert len(first.locator(".caption").text_content().split()) >= 4  # a sentence
    scores = [float(s.split()[1]) for s in page.locator(".card .score").all_text_contents()]
    assert scores == sorted(scores, reverse=True) and len(scores) == 5
    assert "5 results shown" in page.locator("#results-status").text_content()
    page.screenshot(path=str(screenshots / "02-search.png"), full_page=True)
    page.goto(first.locator("a.thumb").get_attribute("href"))  # the best match is the cat
    assert "chelsea" in page.locator("dd").first.text_content()


def test_filters_threshold_and_sort_narrow_and_reorder(page: Any, uploaded: dict[str, Any],
                                                       screenshots: Path) -> None:
    page.goto("/?q=a+photo")
    page.get_by_label("Folder or source").select_option(HOME)
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile("source=%2Fui%2Fhome"))
    assert page.locator("#results .card").count() == 2
    page.screenshot(path=str(screenshots / "03-filter-source.png"), full_page=True)

    page.get_by_label("Folder or source").select_option("")
    page.get_by_label("Sort by").select_option("date")
    page.get_by_label("Relevance threshold").fill("0.15")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile("sort=date"))
    times = page.locator(".card time").evaluate_all("els => els.map((t) => t.dateTime)")
    assert times == sorted(times, reverse=True)  # newest first
    scores = [float(s.split()[1]) for s in page.locator(".card .score").all_text_contents()]
    assert all(score >= 0.15 for score in scores)
    assert page.locator("#min_score_out").text_content() == "0.15"
    page.screenshot(path=str(screenshots / "04-sort-date-threshold.png"), full_page=True)


def test_find_similar_leads_with_the_photo_and_links_to_its_page(
        page: Any, uploaded: dict[str, Any], screenshots: Path) -> None:
    page.goto("/?q=a+cup+of+coffee")
    first_href = page.locator("#results .card .thumb").first.get_attribute("href")
    page.locator("#results .card").first.get_by_role("link", name=re.compile(
        "^Find similar")).click()
    page.wait_for_url(re.compile(r"/similar/\d+$"))
    assert page.locator("#results .card .thumb").first.get_attribute("href") == first_href
    assert page.locator("#results .card").count() == 5
    page.screenshot(path=str(screenshots / "05-find-similar.png"), full_page=True)

    page.locator("#results .card .thumb").first.click()
    page.wait_for_url(re.compile(r"/images/\d+$"))
    image = page.locator("figure img")
    assert image.get_attribute("src").endswith("/content")
    page.wait_for_function("document.querySelector('figure img').naturalWidth > 0")
    details = page.locator("dl.details").text_content()
    assert "Dimensions" in details and TRIP in details
    assert page.locator("h1").text_content().strip()
    page.screenshot(path=str(screenshots / "06-image-page.png"), full_page=True)


def test_keyboard_and_screen_reader_basics(page: Any, uploaded: dict[str, Any]) -> None:
    page.goto("/?q=a+rocket")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#main"
    unlabelled = page.evaluate("""[...document.querySelectorAll('input, select')]
        .filter((el) => el.type !== 'hidden' && el.labels.length === 0).map((el) => el.id)""")
    assert unlabelled == []
    alts = page.eval_on_selector_all("img", "imgs => imgs.map((i) => i.alt)")
    assert alts and all(alt.strip() for alt in alts)
    # every action in a card is a real link a keyboard reaches
    link = page.locator("#results .card .similar").first
    link.focus()
    assert page.evaluate("document.activeElement.textContent").startswith("Find similar")
    assert page.locator("[role=status]").count() >= 1


def test_without_a_session_every_page_leads_to_sign_in(anonymous_page: Any,
                                                       screenshots: Path) -> None:
    page = anonymous_page
    page.goto("/upload")
    page.wait_for_url(re.compile(r"/sign-in\?next=%2Fupload$"))
    assert page.locator("h1").text_content() == "Sign in"
    page.screenshot(path=str(screenshots / "00-sign-in.png"), full_page=True)
    page.get_by_label("API key").fill("csk_not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    assert "not valid" in page.get_by_role("alert").text_content()
    cookies = page.context.cookies()
    assert not any(c["name"] == "capsearch_session" for c in cookies)


def test_signing_in_returns_to_the_page_asked_for_and_signing_out_ends_it(
        anonymous_page: Any, ui_server: UiServer) -> None:
    page = anonymous_page
    page.goto("/upload")
    page.get_by_label("API key").fill(ui_server.key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/upload$"))
    (session,) = [c for c in page.context.cookies() if c["name"] == "capsearch_session"]
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    assert page.evaluate("document.cookie") == ""  # no script can read it
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/sign-in$"))
    page.goto("/")
    page.wait_for_url(re.compile(r"/sign-in$"))


def test_api_docs_render_from_this_server_under_its_csp(page: Any,
                                                        screenshots: Path) -> None:
    violations: list[str] = []
    requests: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text)
            if "Content Security Policy" in msg.text else None)
    page.on("request", lambda req: requests.append(req.url))
    page.goto("/docs")
    page.wait_for_selector(".opblock-tag", timeout=60_000)  # the API's operations, drawn
    assert page.get_by_text("/v1/search").count() >= 1
    origin = page.evaluate("location.origin")
    assert all(url.startswith((origin, "data:")) for url in requests), requests
    assert violations == []
    page.screenshot(path=str(screenshots / "07-api-docs.png"))


def test_a_photos_text_is_on_its_page_and_its_words_find_it(
        page: Any, ui_server: UiServer, uploaded: dict[str, Any], screenshots: Path,
        tmp_path: Path) -> None:
    import time

    from capsearch.client import CapsearchClient
    from tests.support.signs import sign_photo

    sign = tmp_path / "platform-sign.jpg"
    sign.write_bytes(sign_photo(sample("astronaut"), ["PLATFORM 9", "KINGS CROSS"]))
    with CapsearchClient(ui_server.url, api_key=ui_server.key) as client:
        (item,) = client.upload([sign], source=TRIP)
        client.wait_indexed([item.id], timeout=INDEXED_TIMEOUT_MS / 1000)
        deadline = time.monotonic() + 240
        while client.image(item.id).ocr_text is None:  # read after it is indexed
            assert time.monotonic() < deadline, "the sign's text was not read"
            time.sleep(0.25)
    page.goto(f"/images/{item.id}")
    assert page.locator("pre.photo-text").text_content() == "PLATFORM 9\nKINGS CROSS"
    page.screenshot(path=str(screenshots / "09-image-page-text.png"), full_page=True)
    page.goto("/?q=platform+9+kings+cross")
    first = page.locator("#results .card .thumb").first.get_attribute("href")
    assert first == f"/images/{item.id}"
