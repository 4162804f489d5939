"""Per-key token buckets: 429 with Retry-After once a caller spends its burst."""

from __future__ import annotations

import anyio
import pytest

from services.gateway.core.ratelimit import MemoryTokenBucket, RedisTokenBucket, make_rate_limiter
from shared.apikeys import create_key
from shared.config import Settings
from tests.unit.gateway.conftest import Gateway, GatewayFactory, assert_error


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_burst_then_says_how_long_to_wait() -> None:
    clock = Clock()
    bucket = MemoryTokenBucket(rate_per_s=2.0, burst=3, clock=clock)

    async def take() -> float:
        return await bucket.acquire("k")

    assert [anyio.run(take) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert anyio.run(take) == pytest.approx(0.5)
    clock.now += 0.5
    assert anyio.run(take) == 0.0
    clock.now += 100
    assert [anyio.run(take) for _ in range(3)] == [0.0, 0.0, 0.0]  # refills only to the burst
    assert anyio.run(take) > 0


def test_buckets_are_per_caller() -> None:
    bucket = MemoryTokenBucket(rate_per_s=1.0, burst=1, clock=Clock())

    async def both() -> tuple[float, float, float]:
        return await bucket.acquire("a"), await bucket.acquire("a"), await bucket.acquire("b")

    first, second, other = anyio.run(both)
    assert first == 0.0 and second > 0 and other == 0.0


def test_backend_follows_the_queue_backend_unless_told() -> None:
    assert isinstance(make_rate_limiter(Settings()), MemoryTokenBucket)
    assert isinstance(make_rate_limiter(Settings(queue_backend="celery")), RedisTokenBucket)
    assert isinstance(make_rate_limiter(Settings(queue_backend="celery",
                                                 rate_limit={"backend": "memory"})),
                      MemoryTokenBucket)
    assert make_rate_limiter(Settings(rate_limit={"enabled": False})) is None


def test_unreachable_redis_lets_requests_through() -> None:
    bucket = RedisTokenBucket("redis://127.0.0.1:1/0", rate_per_s=1, burst=1, timeout_s=0.2)

    async def twice() -> list[float]:
        try:
            return [await bucket.acquire("k"), await bucket.acquire("k")]
        finally:
            await bucket.aclose()

    assert anyio.run(twice) == [0.0, 0.0]


@pytest.fixture
def limited(make_gateway: GatewayFactory) -> Gateway:
    return make_gateway(auth={"enabled": True, "cache_s": 60},
                        rate_limit={"enabled": True, "rate_per_s": 0.5, "burst": 3})


def test_gateway_answers_429_with_retry_after(limited: Gateway) -> None:
    key = create_key(limited.session_factory, name="busy", scopes=["search"]).key
    headers = {"Authorization": f"Bearer {key}"}
    codes = [limited.client.get("/v1/images", headers=headers).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    resp = limited.client.get("/v1/images", headers=headers)
    assert_error(resp, 429, "rate_limited")
    assert 1 <= int(resp.headers["Retry-After"]) <= 2


def test_one_busy_key_does_not_limit_another(limited: Gateway) -> None:
    busy = {"Authorization": "Bearer " + create_key(limited.session_factory, name="a",
                                                     scopes=["search"]).key}
    calm = {"Authorization": "Bearer " + create_key(limited.session_factory, name="b",
                                                     scopes=["search"]).key}
    for _ in range(4):
        limited.client.get("/v1/images", headers=busy)
    assert limited.client.get("/v1/images", headers=busy).status_code == 429
    assert limited.client.get("/v1/images", headers=calm).status_code == 200


def test_guessing_keys_is_rate_limited_per_address(limited: Gateway) -> None:
    bad = {"Authorization": "Bearer csk_" + "B" * 43}
    codes = [limited.client.get("/v1/images", headers=bad).status_code for _ in range(5)]
    assert codes[:3] == [401, 401, 401] and codes[-1] == 429


def test_probes_are_never_limited(limited: Gateway) -> None:
    assert {limited.client.get("/healthz").status_code for _ in range(10)} == {200}


def test_without_keys_the_limit_is_per_client_address(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(auth={"enabled": False},
                           rate_limit={"enabled": True, "rate_per_s": 0.5, "burst": 2})
    codes = [gateway.client.get("/v1/images").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
