"""The search service over HTTP (FastAPI TestClient): routes, error contract, readiness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import anyio
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.search.app import create_app
from services.search.service import IndexService
from shared.clients import HttpIndexClient
from shared.config import Settings
from shared.errors import CapsearchError
from shared.schemas import IndexChangeResponse
from tests.support.asgiserver import serve_asgi
from tests.unit.search.conftest import DIM, StoreVectors, clustered


@pytest.fixture
def vectors(store_vectors: StoreVectors) -> np.ndarray:
    x = clustered(60, DIM)
    store_vectors(x)
    return x


@pytest.fixture
def client(settings: Settings, service: IndexService, vectors: np.ndarray
           ) -> Iterator[TestClient]:
    with TestClient(create_app(settings, service)) as test_client:
        yield test_client


def _add_body(ids: list[int], x: np.ndarray) -> dict[str, object]:
    return {"items": [{"image_id": i, "vector": v.tolist()} for i, v in zip(ids, x, strict=True)]}


def _assert_error(resp, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code
    assert resp.json()["error"]["message"]


def test_add_then_search_finds_the_image(client: TestClient, vectors: np.ndarray) -> None:
    added = client.post("/v1/index/add", json=_add_body(list(range(1, 61)), vectors))
    found = client.post("/v1/search", json={"vector": vectors[9].tolist(), "k": 3})
    assert added.status_code == 200 and added.json() == {"count": 60, "size": 60}
    assert found.status_code == 200
    assert found.json()["hits"][0]["image_id"] == 10
    assert found.json()["exact"] is True and len(found.json()["hits"]) == 3


def test_remove_takes_the_image_out(client: TestClient, vectors: np.ndarray) -> None:
    client.post("/v1/index/add", json=_add_body(list(range(1, 61)), vectors))
    removed = client.post("/v1/index/remove", json={"image_ids": [10, 12345]})
    found = client.post("/v1/search", json={"vector": vectors[9].tolist(), "k": 60})
    assert removed.json() == {"count": 1, "size": 59}
    assert 10 not in [h["image_id"] for h in found.json()["hits"]]


def test_rebuild_and_stats_report_the_new_version(client: TestClient) -> None:
    built = client.post("/v1/index/rebuild", params={"wait": "true"})
    stats = client.get("/v1/index/stats").json()
    assert built.status_code == 200
    assert built.json()["exact"] is False and built.json()["n_vectors"] == 60
    assert {k: stats[k] for k in ("size", "dim", "index_version", "n_clusters", "exact")} == {
        "size": 60, "dim": DIM, "index_version": built.json()["index_version"],
        "n_clusters": 8, "exact": False}
    assert stats["vectors_at_build"] == 60 and stats["drift"] == 0.0
    assert stats["memory_bytes"] > 60 * DIM * 4 and stats["rebuild_due"] is False


def test_rebuild_runs_in_the_background_and_reports_its_status(client: TestClient) -> None:
    started = client.post("/v1/index/rebuild")
    assert started.status_code == 202 and started.json()["state"] in {"building", "done"}
    deadline = time.monotonic() + 30
    while (status := client.get("/v1/index/rebuild").json())["state"] == "building":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert status["state"] == "done" and status["result"]["n_vectors"] == 60
    assert status["serving_version"] == status["result"]["index_version"]
    assert client.get("/v1/index/stats").json()["index_version"] == status["serving_version"]


def test_search_with_the_wrong_dimension_is_a_422(client: TestClient,
                                                  vectors: np.ndarray) -> None:
    client.post("/v1/index/add", json=_add_body([1], vectors[:1]))
    resp = client.post("/v1/search", json={"vector": [0.1] * (DIM + 3), "k": 5})
    _assert_error(resp, 422, "validation_error")


def test_k_zero_is_a_422(client: TestClient) -> None:
    _assert_error(client.post("/v1/search", json={"vector": [0.1] * DIM, "k": 0}), 422,
                  "validation_error")


def test_malformed_body_is_a_422(client: TestClient) -> None:
    resp = client.post("/v1/search", content=b"{not json",
                       headers={"content-type": "application/json"})
    _assert_error(resp, 422, "validation_error")


def test_ragged_add_vectors_are_a_422(client: TestClient) -> None:
    body = {"items": [{"image_id": 1, "vector": [0.1] * DIM},
                      {"image_id": 2, "vector": [0.1] * (DIM - 1)}]}
    _assert_error(client.post("/v1/index/add", json=body), 422, "validation_error")


def test_nan_in_a_query_is_a_422(client: TestClient) -> None:
    body = b'{"vector": [NaN, 1.0], "k": 1}'
    resp = client.post("/v1/search", content=body, headers={"content-type": "application/json"})
    _assert_error(resp, 422, "validation_error")


def test_add_of_an_unknown_image_is_a_404(client: TestClient) -> None:
    resp = client.post("/v1/index/add", json={"items": [{"image_id": 999,
                                                         "vector": [0.1] * DIM}]})
    _assert_error(resp, 404, "not_found")


def test_readyz_answers_200_once_loaded(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json()["status"] == "ready"


def test_lifespan_loads_the_index_from_settings_alone(settings: Settings,
                                                      vectors: np.ndarray) -> None:
    with TestClient(create_app(settings)) as test_client:
        deadline = time.monotonic() + 10
        while test_client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        stats = test_client.get("/v1/index/stats")
    assert stats.status_code == 200 and stats.json()["size"] == 60


def test_the_shared_http_client_speaks_this_api(settings: Settings, service: IndexService,
                                                vectors: np.ndarray) -> None:
    app = create_app(settings, service)

    async def _round_trip() -> None:
        index = HttpIndexClient("http://search", transport=httpx.ASGITransport(app=app))
        try:
            assert await index.add([1, 2, 3], vectors[:3]) == IndexChangeResponse(count=3, size=3)
            assert (await index.search(vectors[1], 2)).hits[0].image_id == 2
            assert await index.remove([2]) == IndexChangeResponse(count=1, size=2)
            status = await index.start_rebuild()
            with anyio.fail_after(30):
                while status.state == "building":
                    await anyio.sleep(0.02)
                    status = await index.rebuild_status()
            assert status.result is not None
            assert status.result.n_vectors == 60  # rebuilt from the database
            assert (await index.stats()).size == 60
            with pytest.raises(CapsearchError) as refused:
                await index.search(vectors[1][:4], 2)
            assert (refused.value.status_code, refused.value.code) == (422, "validation_error")
        finally:
            await index.aclose()

    with TestClient(app):  # runs the lifespan (thread pool) for the ASGI transport below
        anyio.run(_round_trip)


def test_the_shared_http_client_speaks_this_api_over_real_http(
        settings: Settings, service: IndexService, vectors: np.ndarray) -> None:
    """The same calls on the client's default transport (httpx's) to uvicorn."""

    async def _round_trip() -> None:
        async with serve_asgi(create_app(settings, service), lifespan="on") as url:
            index = HttpIndexClient(url)
            try:
                assert await index.add([1, 2, 3], vectors[:3]) == IndexChangeResponse(
                    count=3, size=3)
                assert (await index.search(vectors[1], 2)).hits[0].image_id == 2
                assert await index.remove([2]) == IndexChangeResponse(count=1, size=2)
                assert (await index.stats()).size == 2
                with pytest.raises(CapsearchError) as refused:
                    await index.search(vectors[1][:4], 2)
                assert (refused.value.status_code, refused.value.code) == (
                    422, "validation_error")
            finally:
                await index.aclose()

    asyncio.run(_round_trip())
