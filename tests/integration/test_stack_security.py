"""Keys, scopes, the service token and the Redis rate limiter, against the running stack."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import redis

from services.gateway.core.ratelimit import RedisTokenBucket
from shared.apikeys import create_key, revoke_key
from shared.db import make_session_factory
from tests.integration.conftest import SERVICE_TOKEN, RunningStack

pytestmark = pytest.mark.integration


def key(stack: RunningStack, *scopes: str) -> str:
    return create_key(make_session_factory(stack.engine), name="it", scopes=scopes).key


def test_gateway_refuses_callers_without_a_valid_key(stack: RunningStack) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        resp = http.get("/v1/search", params={"q": "dog"})
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"
        bad = http.get("/v1/images", headers={"Authorization": "Bearer csk_" + "z" * 43})
        assert bad.status_code == 401
        assert http.get("/readyz").status_code == 200


def test_scopes_are_enforced_over_http(stack: RunningStack) -> None:
    reader = {"Authorization": f"Bearer {key(stack, 'search')}"}
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        assert http.get("/v1/images", headers=reader).status_code == 200
        upload = http.post("/v1/images", headers=reader,
                           files=[("files", ("a.jpg", b"\xff\xd8\xff", "image/jpeg"))])
        assert upload.status_code == 403
        assert http.post("/v1/index/rebuild", headers=reader).status_code == 403


def test_a_revoked_key_stops_working_within_the_cache_time(stack: RunningStack) -> None:
    secret = key(stack, "search")
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        assert http.get("/v1/images", headers=headers).status_code == 200
        revoke_key(make_session_factory(stack.engine), secret[:12])
        cache_s = stack.settings.auth.cache_s
        import time

        time.sleep(cache_s + 0.5)
        assert http.get("/v1/images", headers=headers).status_code == 401


@pytest.mark.parametrize("service", ["encoder", "search"])
def test_internal_services_refuse_calls_without_the_service_token(stack: RunningStack,
                                                                  service: str) -> None:
    base = {"encoder": stack.settings.encoder_url, "search": stack.settings.search_url}[service]
    call = {"encoder": ("POST", "/v1/encode", {"texts": ["a dog"]}),
            "search": ("GET", "/v1/index/stats", None)}[service]
    with httpx.Client(base_url=base, timeout=30) as http:
        refused = http.request(call[0], call[1], json=call[2])
        assert refused.status_code == 401
        wrong = http.request(call[0], call[1], json=call[2],
                             headers={"X-Service-Token": "guess"})
        assert wrong.status_code == 401
        ok = http.request(call[0], call[1], json=call[2],
                          headers={"X-Service-Token": SERVICE_TOKEN})
        assert ok.status_code == 200
        assert http.get("/healthz").status_code == 200


def test_redis_token_bucket_is_atomic_under_concurrency(redis_url: str) -> None:
    bucket = RedisTokenBucket(redis_url, rate_per_s=0.01, burst=10)

    async def burst() -> list[float]:
        try:
            return list(await asyncio.gather(*(bucket.acquire("it-atomic") for _ in range(60))))
        finally:
            await bucket.aclose()

    waits = asyncio.run(burst())
    assert sum(w == 0.0 for w in waits) == 10
    assert all(w > 0 for w in waits if w != 0.0)
    keys = redis.Redis.from_url(redis_url).keys("capsearch:ratelimit:*")
    assert keys and all(redis.Redis.from_url(redis_url).pttl(k) > 0 for k in keys)
