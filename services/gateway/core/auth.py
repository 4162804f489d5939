"""Who is calling, and may they: API keys, scopes and rate limits, checked before a body is read.

Each route declares the scope it needs once, as a dependency: `dependencies=[requires("write")]`.
A pure ASGI middleware resolves the caller once per request (`Authorization: Bearer <key>` or
`X-API-Key: <key>`), takes a token from the caller's rate-limit bucket and leaves the
`Principal` in the request state, where those dependencies look. It runs before routing on
purpose: FastAPI reads and parses a request body before a route's dependencies run, so a check
there alone would let a stranger make the gateway spool an upload. So for every route that
reads a body the middleware also checks the declared scope itself; `body_scopes` derives that
table from the routes' own declarations.

    401 unauthorized   no key, a malformed, unknown or revoked key
    403 forbidden      the key lacks the route's scope (body-carrying routes: already here)
    429 rate_limited   the bucket is empty; Retry-After says when to come back
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request, Security
from fastapi.params import Depends as DependsParam
from fastapi.routing import APIRoute, APIRouter
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from services.gateway.core.context import GatewayContext
from services.gateway.core.ratelimit import RateLimiter
from shared.apikeys import SCOPES, Scope, effective_scopes, hash_key, verify_key
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
MAX_KEY_CHARS = 256
CACHE_MAX_KEYS = 10_000


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may do; `bucket` names their rate-limit bucket."""

    name: str
    scopes: frozenset[str]
    bucket: str | None = None


# the caller when keys are off (embedded mode on loopback): limited per client address
ANONYMOUS = Principal(name="anonymous", scopes=frozenset(SCOPES))

# ---- what routes declare ---------------------------------------------------------------------

# declared so the OpenAPI document (and /docs' Authorize button) shows how to send a key;
# the key itself is checked by AuthMiddleware before the route runs
bearer_scheme = HTTPBearer(auto_error=False, description="an API key: `Bearer csk_...`")
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="an API key, as an alternative to Bearer")


async def get_principal(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
    _api_key: Annotated[str | None, Security(api_key_scheme)] = None,
) -> Principal:
    """The caller AuthMiddleware authenticated (no middleware, no caller: 401)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise Unauthorized("an API key is required")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


@cache
def require_scope(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """The dependency that refuses principals lacking `scope` (403); one per scope, carrying
    the scope it checks for `body_scopes` to read."""

    async def _require(principal: PrincipalDep) -> Principal:
        if scope not in principal.scopes:
            raise Forbidden(f"{principal.name} lacks the {scope!r} scope")
        return principal

    _require.__name__ = f"require_{scope}"
    _require.scope = scope  # type: ignore[attr-defined]
    return _require


def requires(scope: Scope) -> Any:
    """A route's scope declaration: `@router.get(..., dependencies=[requires("search")])`."""
    return Depends(require_scope(scope))


def declared_scope(dependencies: Iterable[DependsParam]) -> str | None:
    """The scope a route declares among its (and its router's) dependencies, if any."""
    for dependency in dependencies:
        scope = getattr(dependency.dependency, "scope", None)
        if scope is not None:
            return str(scope)
    return None


@dataclass(frozen=True)
class BodyScope:
    """A route that reads a body, and the scope it declares."""

    methods: frozenset[str]
    path: re.Pattern[str]
    scope: str

    def matches(self, method: str, path: str) -> bool:
        return method in self.methods and self.path.match(path) is not None


def reads_body(route: APIRoute) -> bool:
    """Whether the route reads a request body: declared parameters (JSON, form, files), or a
    body it parses itself and documents in `openapi_extra`."""
    return route.body_field is not None or "requestBody" in (route.openapi_extra or {})


def body_scopes(routers: Iterable[APIRouter]) -> list[BodyScope]:
    """The scope of every body-reading route of these routers, from its own declaration."""
    out: list[BodyScope] = []
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and reads_body(route):
                methods = frozenset(route.methods or ())
                scope = declared_scope([*router.dependencies, *route.dependencies])
                if scope is None:
                    raise ValueError(f"{sorted(methods)} {route.path} reads a body but "
                                     "declares no scope")
                out.append(BodyScope(methods, route.path_regex, scope))
    return out


# ---- who is calling --------------------------------------------------------------------------


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
        context.ensure_schema()
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
    """Pure ASGI: authenticate, check a body-reading route's scope, rate-limit, then hand the
    request (and the principal) on."""

    def __init__(self, app: ASGIApp, *, enabled: bool, cache_s: float,
                 limiter: RateLimiter | None, body_scopes: Iterable[BodyScope] = ()) -> None:
        self.app = app
        self.enabled = enabled
        self.keys = KeyCache(cache_s)
        self.limiter = limiter
        self.body_scopes = list(body_scopes)

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        try:
            principal = await self._authenticate(scope)
            needed = next((b.scope for b in self.body_scopes
                           if b.matches(scope["method"], path)), None)
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

    async def _authenticate(self, scope: AsgiScope) -> Principal:
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


def _client_bucket(scope: AsgiScope) -> str:
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"
