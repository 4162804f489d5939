"""Request-body caps per route, refused before reading, in the JSON error contract.

Every route gets the small JSON cap (`max_json_bytes`) unless it declares a bigger one next to
its scope, as `dependencies=[requires("write"), accepts_body("upload")]`: `file` is one file at
the per-file cap (POST /v1/search/similar's example), `upload` every file of one request at it
(POST /v1/images). A bigger cap is for files: it applies to multipart bodies only, so a JSON
body to such a route still gets the JSON cap. `body_caps` derives the table from those
declarations, as `body_scopes` does for scopes. A declared Content-Length over the cap is
answered 413 before a byte is read; a chunked body is cut off as soon as it passes the cap
(nothing past it is buffered).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, get_args

from fastapi import Depends
from fastapi.routing import APIRouter
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.core.route_rules import RouteRule, api_routes
from shared.config import Settings
from shared.web import error_response

BodyKind = Literal["json", "file", "upload"]
BODY_KINDS: tuple[BodyKind, ...] = get_args(BodyKind)
# multipart framing per file part (headers, boundary) and the small form fields
PART_OVERHEAD_BYTES = 16 * 1024
FORM_OVERHEAD_BYTES = 64 * 1024


def body_limit(kind: BodyKind, settings: Settings) -> int:
    """The largest request body a route of this kind accepts."""
    per_file = settings.max_upload_bytes + PART_OVERHEAD_BYTES
    if kind == "upload":  # every file at its cap, plus framing
        return settings.max_files_per_request * per_file + FORM_OVERHEAD_BYTES
    if kind == "file":
        return per_file + FORM_OVERHEAD_BYTES
    return settings.max_json_bytes


def upload_body_limit(settings: Settings) -> int:
    """The largest request body POST /v1/images accepts."""
    return body_limit("upload", settings)


@cache
def _marker(kind: BodyKind) -> Callable[[], None]:
    def _accepts() -> None:
        return None

    _accepts.__name__ = f"accepts_{kind}_body"
    _accepts.body_kind = kind  # type: ignore[attr-defined]
    return _accepts


def accepts_body(kind: BodyKind) -> Any:
    """A route's body-cap declaration (routes without one get the JSON cap)."""
    if kind not in BODY_KINDS:
        raise ValueError(f"body kind must be one of {BODY_KINDS}, not {kind!r}")
    return Depends(_marker(kind))


@dataclass(frozen=True)
class BodyCap(RouteRule):
    """A route with a cap of its own."""

    limit: int


def body_caps(routers: Iterable[APIRouter], settings: Settings) -> list[BodyCap]:
    """The cap of every route that declares one, from its own declaration."""
    out: list[BodyCap] = []
    for route, dependencies in api_routes(routers):
        kinds = {getattr(d.dependency, "body_kind", None) for d in dependencies} - {None}
        if len(kinds) > 1:
            raise ValueError(f"{route.path} declares several body caps: {sorted(kinds)}")
        if kinds:
            out.append(BodyCap(frozenset(route.methods or ()), route.path_regex,
                               body_limit(kinds.pop(), settings)))
    return out


class BodyTooLarge(HTTPException):
    """Raised from `receive`: an HTTPException, so FastAPI's body parsing re-raises it as is
    and the app's error handler renders it (413, payload_too_large)."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"the request body exceeds {limit} bytes")


class BodySizeLimit:
    """Pure ASGI middleware: refuse a request body larger than its route's cap (`default` for
    routes without one of their own)."""

    def __init__(self, app: ASGIApp, *, default: int, caps: Iterable[BodyCap] = ()) -> None:
        self.app = app
        self.default = default
        self.caps = list(caps)

    def limit_for(self, method: str, path: str, content_type: str = "multipart/form-data"
                  ) -> int:
        if not content_type.lower().startswith("multipart/form-data"):
            return self.default  # the bigger caps are for files
        return next((c.limit for c in self.caps if c.matches(method, path)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = self.limit_for(scope["method"], scope["path"], headers.get("content-type", ""))
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = error_response(413, "payload_too_large",
                                      f"the request body exceeds {limit} bytes")
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)
