"""Capture dates in the API: `taken_at` on every record and hit, `sort=taken` (newest capture
first, undated after), the `taken_from`/`taken_to` filters and their validation, and the upload
path reading the date from the file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.exif import jpeg_taken
from tests.unit.gateway.collection import Photo, seed
from tests.unit.gateway.conftest import Gateway, GatewayFactory, assert_error
from tests.unit.gateway.test_imports import wait_done


def day(n: int, hour: int = 12) -> datetime:
    return datetime(2020, 6, n, hour, 0, tzinfo=UTC)


@pytest.fixture
def photos(gateway: Gateway) -> dict[str, int]:
    # uploaded in one order (created), taken in another; two have no capture date
    ids = seed(gateway, [
        Photo("old.jpg", created=datetime(2024, 1, 4, tzinfo=UTC), taken=day(1)),
        Photo("undated-a.jpg", created=datetime(2024, 1, 1, tzinfo=UTC)),
        Photo("new.jpg", created=datetime(2024, 1, 2, tzinfo=UTC), taken=day(9)),
        Photo("mid.jpg", created=datetime(2024, 1, 3, tzinfo=UTC), taken=day(5)),
        Photo("undated-b.jpg", created=datetime(2024, 1, 5, tzinfo=UTC)),
    ])
    # relevance: undated-b, old, undated-a, mid, new
    gateway.backends.hits = [(ids["undated-b.jpg"], 0.9), (ids["old.jpg"], 0.8),
                             (ids["undated-a.jpg"], 0.7), (ids["mid.jpg"], 0.6),
                             (ids["new.jpg"], 0.5)]
    return ids


def search(gateway: Gateway, **params: object) -> dict[str, object]:
    resp = gateway.client.get("/v1/search", params={"q": "photos", **params})
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def names(body: dict[str, object], key: str = "results") -> list[str]:
    return [r["filename"] for r in body[key]]  # type: ignore[index,union-attr]


def test_sort_taken_is_newest_capture_first_undated_last(gateway: Gateway,
                                                         photos: dict[str, int]) -> None:
    body = search(gateway, sort="taken")
    assert body["sort"] == "taken"
    # undated after the dated ones, newest upload first among them
    assert names(body) == ["new.jpg", "mid.jpg", "old.jpg", "undated-b.jpg", "undated-a.jpg"]
    taken = [r["taken_at"] for r in body["results"]]  # type: ignore[union-attr]
    assert taken[:3] == ["2020-06-09T12:00:00Z", "2020-06-05T12:00:00Z",
                         "2020-06-01T12:00:00Z"]
    assert taken[3:] == [None, None]


def test_every_search_result_carries_taken_at(gateway: Gateway,
                                              photos: dict[str, int]) -> None:
    for sort in ("relevance", "date"):
        results = search(gateway, sort=sort)["results"]
        assert all("taken_at" in r for r in results)  # type: ignore[union-attr]
    top = search(gateway)["results"][1]  # type: ignore[index]
    assert top["filename"] == "old.jpg" and top["taken_at"] == "2020-06-01T12:00:00Z"


def test_taken_range_keeps_photos_taken_inside_it(gateway: Gateway,
                                                  photos: dict[str, int]) -> None:
    body = search(gateway, sort="taken", taken_from="2020-06-02", taken_to="2020-06-09")
    assert names(body) == ["new.jpg", "mid.jpg"]  # taken_to includes its whole day
    assert names(search(gateway, taken_to="2020-06-05T11:00:00Z")) == ["old.jpg"]
    # an undated photo is outside every capture range
    assert names(search(gateway, taken_from="1900-01-01")) == ["old.jpg", "mid.jpg", "new.jpg"]


def test_cursor_pages_a_taken_sorted_search(gateway: Gateway, photos: dict[str, int]) -> None:
    pages, cursor = [], None
    while True:
        body = search(gateway, k=2, sort="taken", **({"cursor": cursor} if cursor else {}))
        pages += names(body)
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == ["new.jpg", "mid.jpg", "old.jpg", "undated-b.jpg", "undated-a.jpg"]


@pytest.mark.parametrize(("params", "says"), [
    ({"taken_from": "last summer"}, "taken_from: 'last summer' is not an ISO date"),
    ({"taken_to": "2020-13-01"}, "taken_to: '2020-13-01' is not an ISO date"),
    ({"taken_from": "2020-06-09", "taken_to": "2020-06-01"},
     "taken_from: must be before taken_to"),
    ({"taken_to": "9999-12-31"}, "taken_to: '9999-12-31' is not an ISO date"),
])
def test_bad_capture_filters_are_422_saying_what_is_wrong(
        gateway: Gateway, params: dict[str, str], says: str) -> None:
    for path, extra in (("/v1/search", {"q": "photos"}), ("/v1/images", {})):
        resp = gateway.client.get(path, params={**extra, **params})
        assert says in assert_error(resp, 422, "validation_error")
    assert gateway.backends.encoded == []


def test_listing_sorts_by_capture_date_and_filters(gateway: Gateway,
                                                   photos: dict[str, int]) -> None:
    def listed(**params: object) -> list[str]:
        resp = gateway.client.get("/v1/images", params=params)
        assert resp.status_code == 200, resp.text
        return names(resp.json(), "images")

    assert listed() == ["undated-b.jpg", "mid.jpg", "new.jpg", "undated-a.jpg", "old.jpg"]
    assert listed(sort="taken") == ["new.jpg", "mid.jpg", "old.jpg", "undated-b.jpg",
                                    "undated-a.jpg"]
    assert listed(sort="taken", limit=2, offset=2) == ["old.jpg", "undated-b.jpg"]
    assert listed(taken_from="2020-06-05") == ["mid.jpg", "new.jpg"]
    assert_error(gateway.client.get("/v1/images", params={"sort": "size"}), 422)


def test_image_record_carries_taken_at(gateway: Gateway, photos: dict[str, int]) -> None:
    body = gateway.client.get(f"/v1/images/{photos['mid.jpg']}").json()
    assert body["taken_at"] == "2020-06-05T12:00:00Z"
    body = gateway.client.get(f"/v1/images/{photos['undated-a.jpg']}").json()
    assert body["taken_at"] is None
    looked = gateway.client.post("/v1/images/lookup", json={"ids": [photos["new.jpg"]]}).json()
    assert looked["images"][0]["taken_at"] == "2020-06-09T12:00:00Z"


def test_an_upload_stores_the_files_capture_date(gateway: Gateway) -> None:
    resp = gateway.upload([("a.jpg", jpeg_taken("2019:07:14 18:05:00", "+02:00", seed=1)),
                           ("b.jpg", jpeg_taken("0000:00:00 00:00:00", seed=2)),
                           ("c.jpg", jpeg_taken(None, seed=3))])
    assert resp.status_code == 202, resp.text
    a, b, c = (item["id"] for item in resp.json()["images"])
    taken = {i: gateway.client.get(f"/v1/images/{i}").json()["taken_at"] for i in (a, b, c)}
    assert taken == {a: "2019-07-14T16:05:00Z", b: None, c: None}


def test_a_folder_import_stores_the_capture_dates(make_gateway: GatewayFactory,
                                                  tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    (root / "dated.jpg").write_bytes(jpeg_taken("2012:02:29 06:00:00", seed=4))
    (root / "plain.jpg").write_bytes(jpeg_taken(None, seed=5))
    gateway = make_gateway(import_roots=[root])
    started = gateway.client.post("/v1/imports", json={"folder": str(root)}).json()
    assert wait_done(gateway, started["id"])["added"] == 2
    listed = gateway.client.get("/v1/images", params={"sort": "taken"}).json()["images"]
    assert [(i["filename"], i["taken_at"]) for i in listed] == [
        ("dated.jpg", "2012-02-29T06:00:00Z"), ("plain.jpg", None)]
