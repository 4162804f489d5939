"""Who is calling, and may they: API keys, scopes and rate limits, checked before a body is read.

Each route declares the scope it needs once, as a dependency: `dependencies=[requires("write")]`.
A pure ASGI middleware resolves the caller once per request (`Authorization: Bearer <key>` or
`X-API-Key: <key>`, or a browser's session cookie from /sign-in, `core/sessions.py`: a web UI
page without one is redirected there, 303), takes a token from the caller's rate-limit bucket
and leaves the `Principal` in the request state, where those dependencies look. It runs before
routing on purpose: FastAPI reads and parses a request body before a route's dependencies run,
so a check there alone would let a stranger make the gateway spool an upload. So for every
route that reads a body the middleware also checks the declared scope itself; `body_scopes`
derives that table from the routes' own declarations.

    401 unauthorized   no key, a malformed, unknown or revoked key
    403 forbidden      the key lacks the route's scope (body-carrying routes: already here)
    429 rate_limited   the bucket is empty; Retry-After says when to come back
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import cache, partial
from typing import Annotated, Any
from urllib.parse import urlencode

import anyio
from fastapi import Depends, Request, Security
from fastapi.params import Depends as DependsParam
from fastapi.routing import APIRoute, APIRouter
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import Headers
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from services.gateway.core.context import GatewayContext
from services.gateway.core.ratelimit import RateLimiter
from services.gateway.core.route_rules import RouteRule, api_routes
from services.gateway.core.sessions import COOKIE_NAME, SessionCookies, SessionRef
from shared.apikeys import (
    SCOPES,
    KeyInfo,
    Scope,
    active_key,
    effective_scopes,
    hash_key,
    verify_key,
)
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

# answered without a key: probes and the API description (none holds user data)
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/openapi.json"})
# static assets of the web UI and the API docs (no data in them)
OPEN_PREFIXES = ("/static/",)
# signing in and out: no key yet (or none needed), but rate-limited by client address
SIGN_IN_PATHS = frozenset({"/sign-in", "/sign-out"})
SIGN_IN_PAGE = "/sign-in"
# with keys on: an API key or the metrics token (`metrics_token`) for Prometheus
METRICS_PATH = "/metrics"
MAX_KEY_CHARS = 256
CACHE_MAX_KEYS = 10_000


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may do; `bucket` names their rate-limit bucket."""

    name: str
    scopes: frozenset[str]
    bucket: str | None = None
    session: bool = False  # signed in through /sign-in (a browser), not a key per request


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
class BodyScope(RouteRule):
    """A route that reads a body, and the scope it declares."""

    scope: str


def reads_body(route: APIRoute) -> bool:
    """Whether the route reads a request body: declared parameters (JSON, form, files), or a
    body it parses itself and documents in `openapi_extra`."""
    return route.body_field is not None or "requestBody" in (route.openapi_extra or {})


def body_scopes(routers: Iterable[APIRouter]) -> list[BodyScope]:
    """The scope of every body-reading route of these routers, from its own declaration."""
    out: list[BodyScope] = []
    for route, dependencies in api_routes(routers):
        if reads_body(route):
            methods = frozenset(route.methods or ())
            scope = declared_scope(dependencies)
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
    """Checks keys (and the keys of sessions) in the database, trusting a good one for `ttl_s`
    (the revocation delay)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._good: dict[str, tuple[Principal, float]] = {}

    async def principal(self, context: GatewayContext, key: str) -> Principal | None:
        return await self._cached(hash_key(key), partial(_lookup, context, key))

    async def session_principal(self, context: GatewayContext, ref: SessionRef
                                ) -> Principal | None:
        return await self._cached(f"session:{ref.key_id}:{ref.prefix}",
                                  partial(_lookup_session, context, ref))

    async def _cached(self, name: str, lookup: Callable[[], Principal | None]
                      ) -> Principal | None:
        now = time.monotonic()
        hit = self._good.get(name)
        if hit is not None and hit[1] > now:
            return hit[0]
        principal = await anyio.to_thread.run_sync(lookup)
        if principal is not None and self.ttl_s > 0:
            if len(self._good) >= CACHE_MAX_KEYS:
                self._good = {d: v for d, v in self._good.items() if v[1] > now}
            self._good[name] = (principal, now + self.ttl_s)
        return principal


def _checked_db(context: GatewayContext, check: Callable[[], KeyInfo | None]) -> KeyInfo | None:
    try:
        context.ensure_schema()
        return check()
    except SQLAlchemyError as exc:  # connection refused, lost, or the pool exhausted
        log.warning("database unavailable while checking an API key: %s",
                    str(exc).splitlines()[0][:300])
        raise DatabaseUnavailable("the database is unavailable; try again shortly") from exc


def key_principal(info: KeyInfo, *, session: bool = False) -> Principal:
    """What a live key may do, as a Principal."""
    name = f"key {info.prefix} ({info.name})" if info.name else f"key {info.prefix}"
    return Principal(name=name, scopes=effective_scopes(info.scopes),
                     bucket=f"key:{info.prefix}", session=session)


def _lookup(context: GatewayContext, key: str) -> Principal | None:
    """Blocking: the database row of this key as a Principal (None if not a live key)."""
    info = _checked_db(context, partial(verify_key, context.session_factory, key))
    return key_principal(info) if info is not None else None


def _lookup_session(context: GatewayContext, ref: SessionRef) -> Principal | None:
    """Blocking: the session's key if it is still active (revoking a key ends its sessions)."""
    info = _checked_db(context, partial(active_key, context.session_factory, ref.key_id,
                                        ref.prefix))
    return key_principal(info, session=True) if info is not None else None


def sign_in_redirect(scope: AsgiScope) -> RedirectResponse:
    """303 to the sign-in page, which sends the browser back here afterwards."""
    here = scope.get("path", "/")
    query = scope.get("query_string", b"").decode("latin-1")
    back = f"{here}?{query}" if query else here
    target = SIGN_IN_PAGE if back == "/" else f"{SIGN_IN_PAGE}?{urlencode({'next': back})}"
    return RedirectResponse(target, status_code=303)


class AuthMiddleware:
    """Pure ASGI: authenticate, check a body-reading route's scope, rate-limit, then hand the
    request (and the principal) on."""

    def __init__(self, app: ASGIApp, *, enabled: bool, cache_s: float,
                 limiter: RateLimiter | None, body_scopes: Iterable[BodyScope] = (),
                 sessions: SessionCookies | None = None,
                 pages: Iterable[re.Pattern[str]] = (), metrics_token: str = "") -> None:
        self.app = app
        self.enabled = enabled
        self.keys = KeyCache(cache_s)
        self.limiter = limiter
        self.body_scopes = list(body_scopes)
        self.sessions = sessions
        self.pages = list(pages)  # the web UI's pages: no caller → 303 to /sign-in
        self._metrics_token = metrics_token.encode()

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        try:
            if path in SIGN_IN_PATHS or self._metrics_scraper(scope):
                await self._take_token(_client_bucket(scope))
                await self.app(scope, receive, send)
                return
            principal = await self._authenticate(scope)
            needed = next((b.scope for b in self.body_scopes
                           if b.matches(scope["method"], path)), None)
            if needed is not None and needed not in principal.scopes:
                raise Forbidden(f"{principal.name} lacks the {needed!r} scope")
            await self._take_token(principal.bucket or _client_bucket(scope))
        except SignInRequired:
            await sign_in_redirect(scope)(scope, receive, send)
            return
        except CapsearchError as exc:
            response = error_response(exc.status_code, exc.code, exc.message,
                                      headers=exc.headers)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    def _metrics_scraper(self, scope: AsgiScope) -> bool:
        """/metrics without keys (loopback), or with the metrics token (for Prometheus)."""
        if scope["path"] != METRICS_PATH:
            return False
        if not self.enabled:
            return True
        presented = Headers(scope=scope).get("authorization", "").removeprefix("Bearer ")
        return bool(self._metrics_token) and hmac.compare_digest(presented.encode(),
                                                                 self._metrics_token)

    async def _authenticate(self, scope: AsgiScope) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        try:
            headers = Headers(scope=scope)
            key = presented_key(headers)
            context: GatewayContext | None = getattr(scope["app"].state, "context", None)
            if key is None:
                session = await self._session(context, headers)
                if session is not None:
                    return session
                if self._is_page(scope):
                    raise SignInRequired()
                raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>' "
                                   "(create one with `capsearch keys create`)")
            if len(key) > MAX_KEY_CHARS:
                raise Unauthorized("the API key is not valid")
            if context is None:
                raise DependencyUnavailable("the gateway is still starting")
            principal = await self.keys.principal(context, key)
            if principal is None:
                raise Unauthorized("the API key is not valid (unknown or revoked)")
            return principal
        except (Unauthorized, SignInRequired):
            # failed attempts spend the caller's address bucket: guessing keys gets 429s
            await self._take_token(_client_bucket(scope))
            raise

    async def _session(self, context: GatewayContext | None, headers: Headers
                       ) -> Principal | None:
        """The caller of a valid session cookie whose key is still active, else None."""
        if self.sessions is None or context is None:
            return None
        ref = self.sessions.read(session_cookie(headers))
        return await self.keys.session_principal(context, ref) if ref is not None else None

    def _is_page(self, scope: AsgiScope) -> bool:
        return scope["method"] in ("GET", "HEAD") and any(
            p.match(scope["path"]) for p in self.pages)

    async def _take_token(self, bucket: str) -> None:
        if self.limiter is None:
            return
        wait = await self.limiter.acquire(bucket)
        if wait > 0:
            raise RateLimited(f"too many requests; retry in {wait:.1f} s", retry_after_s=wait)


class SignInRequired(Exception):
    """A web UI page asked for without a key or session: the browser goes to /sign-in."""


def session_cookie(headers: Headers) -> str | None:
    """The session cookie's value in a request's Cookie header, if any."""
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE_NAME:
            return value.strip('"')
    return None


def page_patterns(routers: Iterable[APIRouter]) -> list[re.Pattern[str]]:
    """The paths of the web UI's pages, from their routers."""
    return [route.path_regex for route, _ in api_routes(routers)]


def _client_bucket(scope: AsgiScope) -> str:
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"
