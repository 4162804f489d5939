"""Per-key rate limits: a token bucket in Redis (shared by every gateway) or in this process.

Each caller has a bucket of `burst` tokens refilled at `rate_per_s`; a request takes one. An
empty bucket answers how long until the next token, which becomes `Retry-After`. If Redis
itself is unreachable the limiter lets requests through (and says so in the log): the limits
protect the service, they must not take it down.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from shared.config import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "capsearch:ratelimit:"
# buckets kept by the in-process limiter before the fullest ones are forgotten
MEMORY_MAX_BUCKETS = 10_000
FAIL_OPEN_LOG_EVERY_S = 30.0

# atomic refill-and-take on Redis's own clock: KEYS[1] bucket; ARGV rate, burst, cost.
# Returns the seconds to wait as a string ("0" = allowed; Lua numbers would be truncated).
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RateLimiter(Protocol):
    """Takes `cost` tokens from a caller's bucket: 0.0 if allowed, else seconds to wait."""

    async def acquire(self, key: str, cost: float = 1.0) -> float: ...

    async def aclose(self) -> None: ...


class MemoryTokenBucket:
    """The embedded mode's limiter: buckets in a dict (one event loop, so no lock needed)."""

    def __init__(self, *, rate_per_s: float, burst: int,
                 clock: Any = time.monotonic) -> None:
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    async def acquire(self, key: str, cost: float = 1.0) -> float:
        now = self._clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > MEMORY_MAX_BUCKETS:
            self._forget_full(now)
        return wait

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled completely: forgetting them changes nothing."""
        full_after = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}

    async def aclose(self) -> None:
        return None


class RedisTokenBucket:
    """The stack's limiter: one Lua script call per request, atomic across gateways."""

    def __init__(self, url: str, *, rate_per_s: float, burst: int,
                 timeout_s: float = 0.5) -> None:
        self.url = url
        self.rate = float(rate_per_s)
        self.burst = int(burst)
        self._timeout = timeout_s
        self._client: Any = None
        self._script: Any = None
        self._last_warning = 0.0

    def _ensure_client(self) -> Any:
        if self._script is None:
            import redis.asyncio as aredis

            self._client = aredis.Redis.from_url(
                self.url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout)
            self._script = self._client.register_script(TOKEN_BUCKET_LUA)
        return self._script

    async def acquire(self, key: str, cost: float = 1.0) -> float:
        script = self._ensure_client()
        try:
            wait = await script(keys=[KEY_PREFIX + key], args=[self.rate, self.burst, cost])
        except Exception as exc:  # redis down or slow: fail open, loudly
            now = time.monotonic()
            if now - self._last_warning > FAIL_OPEN_LOG_EVERY_S:
                self._last_warning = now
                log.warning("rate limiter unavailable, letting requests through: %s", exc)
            return 0.0
        return float(wait.decode() if isinstance(wait, bytes) else wait)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            self._script = None


def make_rate_limiter(settings: Settings) -> RateLimiter | None:
    """The limiter the settings ask for, or None when limits are off."""
    cfg = settings.rate_limit
    if not cfg.enabled:
        return None
    backend = cfg.backend
    if backend == "auto":
        backend = "redis" if settings.queue_backend == "celery" else "memory"
    if backend == "redis":
        return RedisTokenBucket(cfg.redis_url or settings.broker_url,
                                rate_per_s=cfg.rate_per_s, burst=cfg.burst)
    return MemoryTokenBucket(rate_per_s=cfg.rate_per_s, burst=cfg.burst)
