"""GET /v1/search: sort by date, filters, cursor paging and hybrid (keyword + vector) ranking."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.unit.gateway.collection import Photo, seed, unit
from tests.unit.gateway.conftest import Gateway, assert_error


def day(n: int) -> datetime:
    return datetime(2024, 5, n, 12, 0, tzinfo=UTC)


@pytest.fixture
def photos(gateway: Gateway) -> dict[str, int]:
    ids = seed(gateway, [
        Photo("dog.jpg", "a dog on a beach", created=day(1), source="/p/holiday",
              width=4000, height=3000, size_bytes=3_000_000),
        Photo("cat.jpg", "a cat on a sofa", created=day(3), source="/p/home",
              width=800, height=600, size_bytes=200_000),
        Photo("car.jpg", "a red car", created=day(2), source="/p/holiday/day2",
              width=1600, height=1200, size_bytes=900_000),
        Photo("boat.jpg", "a boat on a lake", created=day(4), source="/p/holidays",
              width=1000, height=1000, size_bytes=500_000),
    ])
    # the vector ranking: cat, dog, car, boat
    gateway.backends.hits = [(ids["cat.jpg"], 0.9), (ids["dog.jpg"], 0.7),
                             (ids["car.jpg"], 0.5), (ids["boat.jpg"], 0.2)]
    return ids


def names(body: dict[str, object], ids: dict[str, int]) -> list[str]:
    by_id = {v: k for k, v in ids.items()}
    return [by_id[r["id"]] for r in body["results"]]  # type: ignore[index,union-attr]


def search(gateway: Gateway, **params: object) -> dict[str, object]:
    resp = gateway.client.get("/v1/search", params={"q": "pets", **params})
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def test_sort_by_date_orders_matches_newest_first(gateway: Gateway,
                                                  photos: dict[str, int]) -> None:
    body = search(gateway, sort="date", min_score=0.4)
    assert names(body, photos) == ["cat.jpg", "car.jpg", "dog.jpg"]  # boat is below 0.4
    assert body["sort"] == "date"
    assert [r["score"] for r in body["results"]] == [0.9, 0.5, 0.7]  # still the cosine


def test_date_range_keeps_uploads_inside_it(gateway: Gateway, photos: dict[str, int]) -> None:
    body = search(gateway, date_from="2024-05-02", date_to="2024-05-03")
    assert names(body, photos) == ["cat.jpg", "car.jpg"]  # date_to is inclusive of the day
    body = search(gateway, date_from="2024-05-02T13:00:00Z")
    assert names(body, photos) == ["cat.jpg", "boat.jpg"]


def test_source_filter_takes_a_folder_and_its_subfolders(gateway: Gateway,
                                                         photos: dict[str, int]) -> None:
    assert names(search(gateway, source="/p/holiday"), photos) == ["dog.jpg", "car.jpg"]
    assert names(search(gateway, source="/p/holiday/"), photos) == ["dog.jpg", "car.jpg"]
    assert names(search(gateway, source="/p/home"), photos) == ["cat.jpg"]


def test_size_filters_by_megapixels_and_bytes(gateway: Gateway,
                                              photos: dict[str, int]) -> None:
    assert names(search(gateway, min_megapixels=4), photos) == ["dog.jpg"]
    assert names(search(gateway, max_megapixels=1), photos) == ["cat.jpg", "boat.jpg"]
    assert names(search(gateway, min_bytes=400_000, max_bytes=1_000_000), photos) == [
        "car.jpg", "boat.jpg"]


def test_filters_combine_with_the_threshold_and_sort(gateway: Gateway,
                                                     photos: dict[str, int]) -> None:
    body = search(gateway, source="/p", min_megapixels=0.4, min_score=0.3, sort="date")
    assert names(body, photos) == ["cat.jpg", "car.jpg", "dog.jpg"]


def test_filtered_search_asks_the_index_for_more_candidates(
        gateway: Gateway, photos: dict[str, int]) -> None:
    search(gateway, k=2)
    search(gateway, k=2, source="/p/home")
    plain, filtered = gateway.backends.searches
    assert plain["k"] == 2
    assert filtered["k"] == gateway.settings.ranking.filter_depth


def test_cursor_pages_through_results_without_repeats(gateway: Gateway,
                                                      photos: dict[str, int]) -> None:
    first = search(gateway, k=3)
    assert names(first, photos) == ["cat.jpg", "dog.jpg", "car.jpg"]
    assert first["next_cursor"]
    second = search(gateway, k=3, cursor=first["next_cursor"])
    assert names(second, photos) == ["boat.jpg"]
    assert second["next_cursor"] is None


def test_cursor_pages_a_date_sorted_filtered_search(gateway: Gateway,
                                                    photos: dict[str, int]) -> None:
    pages, cursor = [], None
    while True:
        body = search(gateway, k=1, sort="date", source="/p", **(
            {"cursor": cursor} if cursor else {}))
        pages += names(body, photos)
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == ["boat.jpg", "cat.jpg", "car.jpg", "dog.jpg"]


def test_cursor_of_another_query_or_garbage_is_422(gateway: Gateway,
                                                   photos: dict[str, int]) -> None:
    cursor = search(gateway, k=1)["next_cursor"]
    resp = gateway.client.get("/v1/search", params={"q": "pets", "k": 1, "sort": "date",
                                                    "cursor": cursor})
    assert "different query" in assert_error(resp, 422, "validation_error")
    resp = gateway.client.get("/v1/search", params={"q": "pets", "cursor": "not-a-cursor"})
    assert_error(resp, 422, "validation_error")


@pytest.mark.parametrize("params", [
    {"sort": "size"}, {"date_from": "yesterday"}, {"date_from": "2024-05-03",
                                                  "date_to": "2024-05-01"},
    {"min_bytes": -1}, {"min_bytes": 10, "max_bytes": 5}, {"min_megapixels": "inf"},
    {"min_megapixels": 3, "max_megapixels": 1},
], ids=["sort", "date", "date-range", "bytes", "bytes-range", "mp-inf", "mp-range"])
def test_bad_options_are_422_json(gateway: Gateway, params: dict[str, object]) -> None:
    resp = gateway.client.get("/v1/search", params={"q": "pets", **params})
    assert_error(resp, 422, "validation_error")
    assert gateway.backends.encoded == []


def test_hybrid_fuses_caption_word_matches_into_the_order(gateway: Gateway,
                                                          photos: dict[str, int]) -> None:
    assert names(search(gateway, q="boat lake", hybrid="false"), photos)[0] == "cat.jpg"
    body = search(gateway, q="boat lake", hybrid="true")
    assert body["hybrid"] is True
    # the boat's caption matches both words: fusion lifts it from last to first
    assert names(body, photos)[0] == "boat.jpg"
    assert {r["score"] for r in body["results"]} == {0.9, 0.7, 0.5, 0.2}


def test_hybrid_scores_a_text_only_match_by_its_stored_vector(gateway: Gateway) -> None:
    ids = seed(gateway, [Photo("a.jpg", "a horse"), Photo("b.jpg", "a kite on a beach",
                                                          vector=unit(0.6, 0.8))])
    gateway.backends.hits = [(ids["a.jpg"], 0.8)]  # the index missed b
    body = search(gateway, q="kite", hybrid="true")
    by_name = {r["filename"]: r["score"] for r in body["results"]}
    assert by_name["b.jpg"] == pytest.approx(0.6)  # query vector is (1, 0, 0, 0)
    assert list(by_name) == ["a.jpg", "b.jpg"]  # text weight 0.1 < the vector list's 1


def test_hybrid_default_follows_the_setting(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(ranking={"hybrid": True})
    ids = seed(gateway, [Photo("a.jpg", "a dog"), Photo("b.jpg", "a red kite")])
    gateway.backends.hits = [(ids["a.jpg"], 0.9), (ids["b.jpg"], 0.3)]
    body = gateway.client.get("/v1/search", params={"q": "kite"}).json()
    assert body["hybrid"] is True
    assert body["results"][0]["filename"] == "b.jpg"
