"""The gateway's fan-out over search shards (httpx.MockTransport plays the shards)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import anyio
import httpx
import numpy as np
import pytest

from services.gateway.core.context import build_context, close_context
from shared.clients import HttpIndexClient
from shared.config import Settings
from shared.errors import DependencyTimeout, DependencyUnavailable
from shared.shards import ShardedIndexClient, make_index_client
from tests.unit.gateway.conftest import DIM, Gateway, GatewayFactory

Handler = Callable[[httpx.Request], httpx.Response]


def _shard(hits: list[tuple[int, float]], *, version: int = 7, seen: list[dict] | None = None
           ) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        if seen is not None:
            seen.append({"path": request.url.path, **body})
        if request.url.path == "/v1/search":
            top = sorted(hits, key=lambda h: -h[1])[: body["k"]]
            return httpx.Response(200, json={
                "hits": [{"image_id": i, "score": s} for i, s in top],
                "index_version": version, "exact": False})
        if request.url.path in ("/v1/index/add", "/v1/index/remove"):
            n = len(body.get("items", body.get("image_ids", [])))
            return httpx.Response(200, json={"count": n, "size": 10})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "?"}})

    return handle


def _dead(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


async def _slow(request: httpx.Request) -> httpx.Response:
    await asyncio.sleep(30)
    return httpx.Response(200, json={})


def _client(handlers: list[Handler], **kw: object) -> ShardedIndexClient:
    shards = [HttpIndexClient(f"http://shard{i}", transport=httpx.MockTransport(h))
              for i, h in enumerate(handlers)]
    return ShardedIndexClient(shards, **{"timeout_s": 0.5, **kw})  # type: ignore[arg-type]


QUERY = np.ones(DIM, dtype=np.float32)
SHARD_HITS = [[(1, 0.9), (4, 0.5), (7, 0.2)], [(2, 0.95), (5, 0.4)], [(3, 0.6), (6, 0.55)]]


def test_the_merged_top_k_is_the_top_k_of_every_shards_hits() -> None:
    client = _client([_shard(h) for h in SHARD_HITS])
    found = anyio.run(client.search, QUERY, 4)
    every = sorted((hit for hits in SHARD_HITS for hit in hits), key=lambda h: -h[1])
    assert [(h.image_id, h.score) for h in found.hits] == every[:4]
    assert found.partial is False and found.failed_shards == [] and found.index_version == 7


def test_a_dead_shard_gives_partial_results_marked_as_such() -> None:
    client = _client([_shard(SHARD_HITS[0]), _dead, _shard(SHARD_HITS[2])])
    found = anyio.run(client.search, QUERY, 3)
    assert found.partial is True and found.failed_shards == [1]
    assert [h.image_id for h in found.hits] == [1, 3, 6]


def test_a_slow_shard_is_cut_off_at_its_timeout_not_waited_for() -> None:
    client = _client([_shard(SHARD_HITS[0]), _slow], timeout_s=0.2)
    started = time.monotonic()
    found = anyio.run(client.search, QUERY, 2)
    assert time.monotonic() - started < 5
    assert found.partial is True and found.failed_shards == [1]
    assert [h.image_id for h in found.hits] == [1, 4]


def test_with_the_error_setting_a_dead_shard_is_a_503() -> None:
    client = _client([_shard(SHARD_HITS[0]), _dead], on_failure="error")
    with pytest.raises(DependencyUnavailable):
        anyio.run(client.search, QUERY, 2)


def test_when_every_shard_times_out_it_is_a_504() -> None:
    client = _client([_slow, _slow], timeout_s=0.1)
    with pytest.raises(DependencyTimeout):
        anyio.run(client.search, QUERY, 2)


def test_adds_and_removes_reach_every_shard() -> None:
    seen: list[list[dict]] = [[], [], []]
    client = _client([_shard([], seen=s) for s in seen])
    added = anyio.run(client.add, [1, 2], np.ones((2, DIM), dtype=np.float32))
    removed = anyio.run(client.remove, [1])
    assert added.count == 2 and added.size == 30 and removed.count == 3
    assert all([r["path"] for r in s] == ["/v1/index/add", "/v1/index/remove"] for s in seen)


def test_gateway_search_over_shards_answers_partial_results(make_gateway: GatewayFactory
                                                            ) -> None:
    gateway: Gateway = make_gateway()
    client = _client([_shard([(1, 0.9)]), _dead])
    gateway.context.index = client
    resp = gateway.client.get("/v1/search", params={"q": "cat"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["partial"] is True


def test_search_urls_make_a_fan_out_and_one_url_a_plain_client(tmp_path) -> None:  # type: ignore[no-untyped-def]
    one = make_index_client(Settings(data_dir=tmp_path))
    many = make_index_client(Settings(data_dir=tmp_path,
                                            search_urls="http://a:1,http://b:2"))
    assert isinstance(one, HttpIndexClient)
    assert isinstance(many, ShardedIndexClient) and len(many.shards) == 2
    context = build_context(Settings(data_dir=tmp_path, search_urls='["http://a:1","http://b:2"]'))
    try:
        assert isinstance(context.index, ShardedIndexClient)
    finally:
        anyio.run(close_context, context)
    for client in (one, many):
        anyio.run(client.aclose)  # type: ignore[attr-defined]
