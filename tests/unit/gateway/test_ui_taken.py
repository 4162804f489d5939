"""The web UI and capture dates: the sort option, the "taken" date range, the date shown."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from tests.unit.gateway.collection import Photo, seed
from tests.unit.gateway.conftest import Gateway


@pytest.fixture
def photos(gateway: Gateway) -> dict[str, int]:
    ids = seed(gateway, [
        Photo("old.jpg", "an old photo", taken=datetime(2010, 5, 1, 9, 30, tzinfo=UTC)),
        Photo("undated.jpg", "a scan"),
        Photo("new.jpg", "a new photo", taken=datetime(2022, 8, 9, 17, 45, tzinfo=UTC)),
    ])
    gateway.backends.hits = [(ids["undated.jpg"], 0.9), (ids["old.jpg"], 0.8),
                             (ids["new.jpg"], 0.7)]
    return ids


def grid(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'class="thumb" href="/images/(\d+)"', html)]


def test_the_form_offers_sort_by_date_taken_and_a_taken_range(gateway: Gateway,
                                                              photos: dict[str, int]) -> None:
    html = gateway.client.get("/").text
    assert '<option value="taken">Date taken, newest first</option>' in html
    for control in ("taken_from", "taken_to"):
        assert f'id="{control}"' in html and f'for="{control}"' in html


def test_sorting_by_date_taken_puts_undated_photos_last(gateway: Gateway,
                                                        photos: dict[str, int]) -> None:
    html = gateway.client.get("/", params={"q": "photo", "sort": "taken", "form": "1"}).text
    assert grid(html) == [photos["new.jpg"], photos["old.jpg"], photos["undated.jpg"]]
    assert '<option value="taken" selected>' in html
    # without a query (the newest photos) too
    html = gateway.client.get("/", params={"sort": "taken"}).text
    assert grid(html) == [photos["new.jpg"], photos["old.jpg"], photos["undated.jpg"]]


def test_results_show_the_capture_date_when_there_is_one(gateway: Gateway,
                                                         photos: dict[str, int]) -> None:
    html = gateway.client.get("/", params={"q": "photo", "form": "1"}).text
    assert ('<time class="taken" datetime="2022-08-09T17:45:00+00:00" title="taken">'
            'taken 2022-08-09 17:45</time>') in html
    assert 'title="uploaded">uploaded 2024-01-01 00:00</time>' in html  # the undated one


def test_the_taken_range_filters_and_a_bad_one_is_explained(gateway: Gateway,
                                                            photos: dict[str, int]) -> None:
    html = gateway.client.get("/", params={"q": "photo", "taken_from": "2020-01-01"}).text
    assert grid(html) == [photos["new.jpg"]]
    html = gateway.client.get("/", params={"q": "photo", "taken_from": "2020-01-01",
                                           "taken_to": "2019-01-01"}).text
    assert 'role="alert"' in html and "taken from: must be before taken until" in html


def test_image_page_shows_when_it_was_taken(gateway: Gateway, photos: dict[str, int]) -> None:
    html = gateway.client.get(f"/images/{photos['old.jpg']}").text
    assert '<dt>Taken</dt><dd><time datetime="2010-05-01T09:30:00+00:00">2010-05-01 09:30' in html
    html = gateway.client.get(f"/images/{photos['undated.jpg']}").text
    assert "unknown (no capture date in the file)" in html
