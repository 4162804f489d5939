"""Which requests a browser may make: the `Host` a request names, and cross-site writes.

Two checks in one pure ASGI middleware, in every mode:

- **Host.** A request must name one of `allowed_hosts` (default: the bound address plus the
  loopback names; a wildcard bind allows any host unless the setting names them). Without it
  a page on an attacker's domain that re-resolves to 127.0.0.1 (DNS rebinding) could read a
  no-key loopback instance as its own origin. The probes and `/metrics` are answered for any
  Host (an orchestrator calls them by pod address; they hold no user data).
- **Cross-site writes.** A state-changing request (anything but GET, HEAD, OPTIONS) that a
  browser marks as coming from another site is refused: `Sec-Fetch-Site` other than
  `same-origin` or `none` (a different port of the same host is `same-site`, still another
  origin), or, from a browser too old to send that header, an `Origin` that is not this
  request's own host. Requests without either header (the CLI, the Python client, curl) are
  not browsers' and pass: they carry their key themselves. This is the check Go's
  `net/http.CrossOriginProtection` makes; with `SameSite=Lax` session cookies no CSRF token is
  needed on top (docs/deploy.md).

    400 invalid_host          the Host header names no allowed host
    403 cross_site_request    a browser sent a state-changing request from another site
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.config import Settings
from shared.web import error_response

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "*"})
# answered whatever the Host: an orchestrator's probes and scrapes call pod addresses
ANY_HOST_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def allowed_hosts(settings: Settings) -> list[str]:
    """`settings.allowed_hosts`, else the bound address and the loopback names; a wildcard bind
    (0.0.0.0, ::) cannot know its names, so it allows any unless the setting names them."""
    if settings.allowed_hosts:
        return [h.strip().lower() for h in settings.allowed_hosts if h.strip()]
    if settings.host.strip().lower() in WILDCARD_BINDS:
        return ["*"]
    return list(dict.fromkeys([settings.host.strip().lower(), *LOOPBACK_HOSTS]))


def host_name(host_header: str) -> str:
    """`example.com:8000` → `example.com`; `[::1]:8000` → `::1`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def host_matches(name: str, patterns: Iterable[str]) -> bool:
    """`*` matches any name, `*.example.com` its subdomains, anything else itself."""
    for pattern in patterns:
        if pattern == "*" or name == pattern:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def cross_site(method: str, headers: Headers) -> bool:
    """Whether a browser marks this state-changing request as coming from another origin."""
    if method in SAFE_METHODS:
        return False
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return False  # not a browser (or one that sends neither): it carries its own key
    return origin == "null" or urlsplit(origin).netloc.lower() != headers.get("host", "").lower()


class OriginGuard:
    """Pure ASGI: refuse requests for hosts not served here and cross-site writes."""

    def __init__(self, app: ASGIApp, *, hosts: Iterable[str]) -> None:
        self.app = app
        self.hosts = tuple(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["path"] not in ANY_HOST_PATHS and not host_matches(
                host_name(headers.get("host", "")), self.hosts):
            response = error_response(400, "invalid_host",
                                      "this server does not answer for that host name "
                                      "(CAPSEARCH_ALLOWED_HOSTS)")
            await response(scope, receive, send)
            return
        if cross_site(scope["method"], headers):
            response = error_response(403, "cross_site_request",
                                      "a state-changing request from another site is refused")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
