"""Who is calling, and may they: API keys and rate limits, checked before any body is read.

A pure ASGI middleware resolves the caller once per request (`Authorization: Bearer <key>` or
`X-API-Key: <key>`), takes a token from the caller's rate-limit bucket and leaves the
`Principal` in the request state, where the `require_scope` dependencies of the routes look.
It runs before routing on purpose: FastAPI parses a multipart form before a route's
dependencies run, so a check there would let a stranger make the gateway spool an upload.
For the same reason the scope of the body-carrying upload route is checked here too.

    401 unauthorized   no key, a malformed, unknown or revoked key
    403 forbidden      the key lacks the route's scope (routes; upload already here)
    429 rate_limited   the bucket is empty; Retry-After says when to come back
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import anyio
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.deps import ANONYMOUS, GatewayContext, Principal
from services.gateway.ratelimit import RateLimiter
from shared.apikeys import effective_scopes, hash_key, verify_key
from shared.errors import (
    CapsearchError,
    DatabaseUnavailable,
    DependencyUnavailable,
    Forbidden,
    RateLimited,
    Unauthorized,
)
from shared.web import error_response

log = logging.getLogger(__name__)

# answered without a key: probes, Prometheus, the API description (none holds user data)
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect",
                        "/redoc", "/openapi.json"})
# static assets of the web UI (no data in them)
OPEN_PREFIXES = ("/static/",)
# routes whose body must not be read before their scope is known to be held
BODY_SCOPES: Mapping[tuple[str, str], str] = {
    ("POST", "/v1/images"): "write",
    ("POST", "/v1/search/similar"): "search",  # may carry a photo
    ("POST", "/v1/imports"): "admin",
}
MAX_KEY_CHARS = 256
CACHE_MAX_KEYS = 10_000


def presented_key(headers: Headers) -> str | None:
    """The key in `Authorization: Bearer …` or `X-API-Key`, or None when neither is sent."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <API key>'")
        return value.strip()
    key = headers.get("x-api-key")
    return key.strip() if key is not None else None


class KeyCache:
    """Checks keys in the database, trusting a good one for `ttl_s` (the revocation delay)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._good: dict[str, tuple[Principal, float]] = {}

    async def principal(self, context: GatewayContext, key: str) -> Principal | None:
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._good.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        principal = await anyio.to_thread.run_sync(_lookup, context, key)
        if principal is not None and self.ttl_s > 0:
            if len(self._good) >= CACHE_MAX_KEYS:
                self._good = {d: v for d, v in self._good.items() if v[1] > now}
            self._good[digest] = (principal, now + self.ttl_s)
        return principal


def _lookup(context: GatewayContext, key: str) -> Principal | None:
    """Blocking: the database row of this key as a Principal (None if not a live key)."""
    try:
        if context.schema is not None:
            context.schema.ensure()
        info = verify_key(context.session_factory, key)
    except SQLAlchemyError as exc:  # connection refused, lost, or the pool exhausted
        log.warning("database unavailable while checking an API key: %s",
                    str(exc).splitlines()[0][:300])
        raise DatabaseUnavailable("the database is unavailable; try again shortly") from exc
    if info is None:
        return None
    return Principal(name=f"key {info.prefix} ({info.name})" if info.name else
                     f"key {info.prefix}", scopes=effective_scopes(info.scopes),
                     bucket=f"key:{info.prefix}")


class AuthMiddleware:
    """Pure ASGI: authenticate, rate-limit, then hand the request (and principal) on."""

    def __init__(self, app: ASGIApp, *, enabled: bool, cache_s: float,
                 limiter: RateLimiter | None) -> None:
        self.app = app
        self.enabled = enabled
        self.keys = KeyCache(cache_s)
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        try:
            principal = await self._authenticate(scope)
            needed = BODY_SCOPES.get((scope["method"], scope["path"]))
            if needed is not None and needed not in principal.scopes:
                raise Forbidden(f"{principal.name} lacks the {needed!r} scope")
            await self._take_token(principal.bucket or _client_bucket(scope))
        except CapsearchError as exc:
            response = error_response(exc.status_code, exc.code, exc.message,
                                      headers=exc.headers)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        try:
            key = presented_key(Headers(scope=scope))
            if key is None:
                raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>' "
                                   "(create one with `capsearch keys create`)")
            if len(key) > MAX_KEY_CHARS:
                raise Unauthorized("the API key is not valid")
            context: GatewayContext | None = getattr(scope["app"].state, "context", None)
            if context is None:
                raise DependencyUnavailable("the gateway is still starting")
            principal = await self.keys.principal(context, key)
            if principal is None:
                raise Unauthorized("the API key is not valid (unknown or revoked)")
            return principal
        except Unauthorized:
            # failed attempts spend the caller's address bucket: guessing keys gets 429s
            await self._take_token(_client_bucket(scope))
            raise

    async def _take_token(self, bucket: str) -> None:
        if self.limiter is None:
            return
        wait = await self.limiter.acquire(bucket)
        if wait > 0:
            raise RateLimited(f"too many requests; retry in {wait:.1f} s", retry_after_s=wait)


def _client_bucket(scope: Scope) -> str:
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"
