"""The web UI's pages, rendered on the server (the browser tests drive them in Chromium)."""

from __future__ import annotations

import re

import pytest

from tests.unit.gateway.collection import Photo, seed, unit
from tests.unit.gateway.conftest import Gateway


@pytest.fixture
def photos(gateway: Gateway) -> dict[str, int]:
    ids = seed(gateway, [Photo("dog.jpg", "a dog on a <b>beach</b>", vector=unit(1),
                               source="/p/holiday"),
                         Photo("cat.jpg", "a cat", vector=unit(1, 1), source="/p/home")])
    gateway.backends.hits = [(ids["dog.jpg"], 0.8123), (ids["cat.jpg"], 0.4)]
    return ids


def test_home_lists_the_newest_photos_and_the_search_form(gateway: Gateway,
                                                          photos: dict[str, int]) -> None:
    resp = gateway.client.get("/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    html = resp.text
    assert 'role="search"' in html and '<label for="q">' in html
    for control in ("min_score", "sort", "date_from", "date_to", "source", "size", "hybrid"):
        assert f'id="{control}"' in html and f'for="{control}"' in html  # every input labelled
    assert "/p/holiday (1)" in html  # the folder menu
    grid = re.findall(r'class="thumb" href="/images/(\d+)"', html)
    assert grid == [str(photos["cat.jpg"]), str(photos["dog.jpg"])]  # newest first


def test_search_page_shows_caption_score_and_find_similar(gateway: Gateway,
                                                          photos: dict[str, int]) -> None:
    html = gateway.client.get("/", params={"q": "dog", "form": "1"}).text
    assert "score 0.81" in html and "score 0.40" in html
    assert "a dog on a &lt;b&gt;beach&lt;/b&gt;" in html  # captions are escaped
    assert f'href="/similar/{photos["dog.jpg"]}"' in html
    assert f'src="/v1/images/{photos["dog.jpg"]}/thumbnail"' in html
    assert re.search(r'role="status"[^>]*>\s*2 results shown', html)


def test_search_page_applies_threshold_and_filters(gateway: Gateway,
                                                   photos: dict[str, int]) -> None:
    html = gateway.client.get("/", params={"q": "dog", "min_score": "0.5"}).text
    assert "score 0.81" in html and "score 0.40" not in html
    html = gateway.client.get("/", params={"q": "dog", "source": "/p/home"}).text
    assert "score 0.40" in html and "score 0.81" not in html


def test_search_page_explains_bad_input_instead_of_failing(gateway: Gateway,
                                                           photos: dict[str, int]) -> None:
    resp = gateway.client.get("/", params={"q": "dog", "date_from": "someday"})
    assert resp.status_code == 200
    assert 'role="alert"' in resp.text and "not an ISO date" in resp.text


def test_more_results_link_and_fragment(gateway: Gateway) -> None:
    ids = seed(gateway, [Photo(f"{i}.jpg", f"photo {i}") for i in range(30)])
    gateway.backends.hits = [(i, 0.9 - n / 100) for n, i in enumerate(ids.values())]
    html = gateway.client.get("/", params={"q": "photo", "form": "1"}).text
    assert html.count('class="card"') == 24
    link = re.search(r'id="more" href="([^"]+)" data-fragment="([^"]+)"', html)
    assert link is not None
    fragment = gateway.client.get(link.group(2).replace("&amp;", "&")).text
    assert "<html" not in fragment and fragment.count('class="card"') == 6
    assert 'id="more"' not in fragment


def test_image_page_shows_full_image_caption_and_metadata(gateway: Gateway,
                                                          photos: dict[str, int]) -> None:
    image_id = photos["dog.jpg"]
    html = gateway.client.get(f"/images/{image_id}").text
    assert f'src="/v1/images/{image_id}/content"' in html
    assert "640 × 480 pixels" in html and "/p/holiday" in html
    assert f'href="/similar/{image_id}"' in html


def test_similar_page_leads_with_the_photo(gateway: Gateway, photos: dict[str, int]) -> None:
    html = gateway.client.get(f"/similar/{photos['cat.jpg']}").text
    grid = re.findall(r'class="thumb" href="/images/(\d+)"', html)
    assert grid == [str(photos["cat.jpg"]), str(photos["dog.jpg"])]


def test_unknown_image_pages_are_html_404(gateway: Gateway) -> None:
    for path in ("/images/999", "/similar/999"):
        resp = gateway.client.get(path)
        assert resp.status_code == 404 and "not in the collection" in resp.text


def test_upload_page_has_an_accessible_drop_zone(gateway: Gateway) -> None:
    html = gateway.client.get("/upload").text
    assert 'type="file"' in html and 'for="files"' in html and "multiple" in html
    assert 'aria-live="polite"' in html


def test_pages_load_nothing_from_elsewhere(gateway: Gateway, photos: dict[str, int]) -> None:
    for path in ("/", "/upload", f"/images/{photos['dog.jpg']}"):
        resp = gateway.client.get(path)
        assert "script-src 'self'" in resp.headers["content-security-policy"]
        assert not re.search(r'(src|href)="(https?:)?//', resp.text)
    for asset in ("/static/app.js", "/static/app.css"):
        assert gateway.client.get(asset).status_code == 200
