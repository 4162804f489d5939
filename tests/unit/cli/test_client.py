import json
from collections.abc import Callable

import httpx
import pytest

from capsearch.client import ApiError, CapsearchClient


def image_body(image_id: int, status: str) -> dict[str, object]:
    return {
        "id": image_id, "sha256": "ab" * 32, "status": status, "error": None, "caption": None,
        "filename": "x.jpg", "source": "upload", "format": "JPEG", "width": 1, "height": 1,
        "size_bytes": 1, "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z", "content_url": "/c", "thumbnail_url": "/t",
        "status_url": f"/v1/images/{image_id}",
    }


def test_api_errors_surface_code_and_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"error": {"code": "validation_error",
                                                   "message": "q: empty"}})

    with CapsearchClient("http://gw", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ApiError) as err:
            client.search("")
    assert (err.value.status, err.value.code, err.value.message) == (
        422, "validation_error", "q: empty")


def lookup_handler(status_of: Callable[[int], str | None], requests: list[list[int]]
                   ) -> Callable[[httpx.Request], httpx.Response]:
    """A gateway that answers `POST /v1/images/lookup` (None = the id does not exist)."""
    def handler(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("POST", "/v1/images/lookup")
        ids = json.loads(request.content)["ids"]
        requests.append(ids)
        statuses = {i: status_of(i) for i in ids}
        return httpx.Response(200, json={
            "images": [image_body(i, st) for i, st in statuses.items() if st is not None],
            "missing": [i for i, st in statuses.items() if st is None]})
    return handler


def test_wait_indexed_polls_only_outstanding_images_in_one_request_each_time() -> None:
    polls: dict[int, int] = {}
    requests: list[list[int]] = []

    def status_of(image_id: int) -> str:
        polls[image_id] = polls.get(image_id, 0) + 1
        return "indexed" if polls[image_id] >= image_id else "pending"

    progress: list[tuple[int, int]] = []
    transport = httpx.MockTransport(lookup_handler(status_of, requests))
    with CapsearchClient("http://gw", transport=transport) as client:
        done = client.wait_indexed([1, 2, 3, 3], poll_s=0,
                                   on_progress=lambda d, t: progress.append((d, t)))
    assert sorted(done) == [1, 2, 3] and done[2].status == "indexed"
    assert requests == [[1, 2, 3], [2, 3], [3]]
    assert progress == [(1, 3), (2, 3), (3, 3)]


def test_lookup_splits_long_id_lists_and_reports_missing_ids() -> None:
    from shared.schemas import MAX_LOOKUP_IDS

    requests: list[list[int]] = []
    transport = httpx.MockTransport(lookup_handler(
        lambda i: None if i % 1000 == 7 else "indexed", requests))
    ids = list(range(1, 2 * MAX_LOOKUP_IDS + 2))
    with CapsearchClient("http://gw", transport=transport) as client:
        result = client.lookup(ids)
        assert [len(r) for r in requests] == [MAX_LOOKUP_IDS, MAX_LOOKUP_IDS, 1]
        assert result.missing == [7, 1007]
        assert [r.id for r in result.images] == [i for i in ids if i % 1000 != 7]
        # an image deleted while an ingest is awaited is an error, not an endless wait
        with pytest.raises(ApiError) as err:
            client.wait_indexed([6, 7], poll_s=0)
    assert err.value.status == 404 and "7" in err.value.message


def test_wait_indexed_gives_up_after_the_timeout() -> None:
    handler = lookup_handler(lambda _i: "pending", [])

    with CapsearchClient("http://gw", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(TimeoutError):
            client.wait_indexed([7], timeout=0.05, poll_s=0.01)


def test_search_sends_query_parameters() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=json.dumps({"query": "q", "k": 3, "results": []}))

    with CapsearchClient("http://gw", transport=httpx.MockTransport(handler)) as client:
        client.search("a dog", k=3, min_score=0.2)
    assert dict(seen[0].url.params) == {"q": "a dog", "k": "3", "min_score": "0.2"}


def test_a_rate_limited_request_is_retried_after_the_advertised_wait() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            return httpx.Response(429, headers={"Retry-After": "0"},
                                  json={"error": {"code": "rate_limited", "message": "slow"}})
        return httpx.Response(200, json=image_body(5, "indexed"))

    with CapsearchClient("http://gw", transport=httpx.MockTransport(handler)) as client:
        assert client.image(5).status == "indexed"
    assert len(calls) == 3


def capture_handler(seen: list[httpx.Request], body: dict[str, object]
                    ) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=body)
    return handler


def test_search_sends_sort_taken_and_capture_filters_and_reads_taken_at() -> None:
    from datetime import UTC, date, datetime

    hit = {"id": 7, "score": 0.5, "caption": "a dog", "filename": "d.jpg",
           "content_url": "/c", "thumbnail_url": "/t", "taken_at": "2019-07-14T16:05:00Z"}
    seen: list[httpx.Request] = []
    transport = httpx.MockTransport(capture_handler(
        seen, {"query": "dog", "k": 5, "results": [hit], "sort": "taken"}))
    with CapsearchClient("http://gw", transport=transport) as client:
        results = client.search("dog", k=5, sort="taken", taken_from=date(2019, 1, 1),
                                taken_to=datetime(2019, 12, 31, 23, tzinfo=UTC))
    params = dict(seen[0].url.params)
    assert params["sort"] == "taken"
    assert params["taken_from"] == "2019-01-01"
    assert params["taken_to"] == "2019-12-31T23:00:00+00:00"
    assert results.results[0].taken_at == datetime(2019, 7, 14, 16, 5, tzinfo=UTC)


def test_images_listing_passes_sort_taken() -> None:
    seen: list[httpx.Request] = []
    body = {"images": [image_body(1, "indexed") | {"taken_at": None}], "total": 1,
            "limit": 50, "offset": 0}
    with CapsearchClient("http://gw", transport=httpx.MockTransport(
            capture_handler(seen, body))) as client:
        page = client.images(sort="taken", taken_from="2020-01-01")
    assert dict(seen[0].url.params) == {"limit": "50", "offset": "0", "sort": "taken",
                                        "taken_from": "2020-01-01"}
    assert page.images[0].taken_at is None
