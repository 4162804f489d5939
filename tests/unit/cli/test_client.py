import json

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


def test_wait_indexed_polls_until_every_image_is_terminal() -> None:
    calls: dict[int, int] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        image_id = int(request.url.path.rsplit("/", 1)[1])
        calls[image_id] = calls.get(image_id, 0) + 1
        status = "indexed" if calls[image_id] >= image_id else "pending"
        return httpx.Response(200, json=image_body(image_id, status))

    progress: list[tuple[int, int]] = []
    with CapsearchClient("http://gw", transport=httpx.MockTransport(handler)) as client:
        done = client.wait_indexed([1, 2, 3, 3], poll_s=0,
                                   on_progress=lambda d, t: progress.append((d, t)))
    assert sorted(done) == [1, 2, 3]
    assert calls == {1: 1, 2: 2, 3: 3}
    assert progress[-1] == (3, 3)


def test_wait_indexed_gives_up_after_the_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=image_body(7, "pending"))

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
