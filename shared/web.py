"""What every FastAPI service shares at its edge: the error contract, request ids, timing."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SqlPoolTimeout
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.clients import SERVICE_TOKEN_HEADER
from shared.config import Settings, get_settings
from shared.errors import CapsearchError
from shared.logging import configure_logging, request_id_var

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}},
                        headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else err.get("msg", "invalid"))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Map every failure to `{"error": {"code", "message"}}` with the right status, once."""

    @app.exception_handler(CapsearchError)
    async def _capsearch(_: Request, exc: CapsearchError) -> JSONResponse:
        if exc.status_code >= 500:
            log.warning("%s: %s", exc.code, exc.message)
        return error_response(exc.status_code, exc.code, exc.message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "validation_error", _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"),
                              str(exc.detail))

    @app.exception_handler(httpx.TimeoutException)
    async def _timeout(_: Request, exc: httpx.TimeoutException) -> JSONResponse:
        return error_response(504, "dependency_timeout", f"a downstream service timed out: {exc}")

    @app.exception_handler(httpx.TransportError)
    async def _transport(_: Request, exc: httpx.TransportError) -> JSONResponse:
        return error_response(503, "dependency_unavailable",
                              f"a downstream service is unreachable: {exc}")

    @app.exception_handler(httpx.HTTPStatusError)
    async def _status(_: Request, exc: httpx.HTTPStatusError) -> JSONResponse:
        return error_response(502, "dependency_error",
                              f"a downstream service failed: {exc.response.status_code}")

    @app.exception_handler(SqlPoolTimeout)
    async def _db_busy(_: Request, exc: SqlPoolTimeout) -> JSONResponse:
        log.warning("database connection pool exhausted: %s", exc)
        return error_response(503, "database_unavailable",
                              "the database is busy; try again shortly",
                              headers={"Retry-After": "1"})

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return error_response(503, "database_unavailable", "the database is unavailable")

    @app.exception_handler(DBAPIError)
    async def _db_error(_: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return error_response(503, "database_unavailable", "the database connection was lost")
        log.exception("database error")
        return error_response(500, "database_error", "a database error occurred")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal", f"internal error: {type(exc).__name__}")


def install_request_context(app: FastAPI) -> None:
    """Carry (or mint) a request id per request and log method, path, status and time."""
    app.add_middleware(RequestContext)


class RequestContext:
    """Pure ASGI (Starlette's `@app.middleware("http")` runs each request through an extra task
    and memory streams, on every hop of a query): the request id in `request_id_var` for the
    request's logs and in the `X-Request-ID` response header, and one log line per request."""

    quiet_paths = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = Headers(scope=scope).get(REQUEST_ID_HEADER) or uuid.uuid4().hex[:16]
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status: int | str = "?"

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
            # logged while the id is still set, so the request's own line carries it
            if scope["path"] not in self.quiet_paths:
                log.info("%s %s -> %s in %.1f ms", scope["method"], scope["path"], status,
                         (time.perf_counter() - start) * 1000)
        finally:
            request_id_var.reset(token)


class ServiceTokenGuard:
    """Pure ASGI: an internal service answers only callers that hold the shared service token
    (the gateway and the caption worker); the probes stay open for the orchestrator."""

    # probes, and Prometheus (metrics hold counts and latencies, no data; scraped in-cluster)
    open_paths = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.open_paths:
            presented = Headers(scope=scope).get(SERVICE_TOKEN_HEADER, "").encode()
            if not hmac.compare_digest(presented, self._token):
                response = error_response(
                    401, "unauthorized",
                    f"this internal service needs the service token ({SERVICE_TOKEN_HEADER})")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_service_token(app: FastAPI, settings: Settings) -> None:
    """Guard an internal service with settings.service_token (unset: development only, open)."""
    token = settings.service_token.get_secret_value()
    if not token:
        log.warning("CAPSEARCH_SERVICE_TOKEN is unset: %s accepts calls from anyone "
                    "(development only; production refuses to start without it)", app.title)
        return
    app.add_middleware(ServiceTokenGuard, token=token)


def serve(create_app: Callable[[Settings], FastAPI], port_setting: str, *,
          before_start: Callable[[Settings], None] | None = None,
          **uvicorn_options: Any) -> None:
    """`python -m services.<name>`: log as the settings say, run the service's start-up check
    (`before_start`: e.g. refuse a database behind the migrations), then serve its app with
    uvicorn on `settings.host` and the port the named setting holds."""
    settings = get_settings()
    configure_logging(settings.log_level, json_logs=settings.log_json)
    if before_start is not None:
        before_start(settings)
    uvicorn.run(create_app(settings), host=settings.host,
                port=int(getattr(settings, port_setting)), log_config=None, **uvicorn_options)
