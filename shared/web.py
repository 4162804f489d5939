"""What every FastAPI service shares at its edge: the error contract, request ids, timing."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.errors import CapsearchError
from shared.logging import request_id_var

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


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
        return error_response(exc.status_code, exc.code, exc.message)

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

    @app.middleware("http")
    async def _request_context(
        request: Request, call_next: Callable[[Request], Awaitable[object]]
    ) -> object:
        rid = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex[:16]
        token = request_id_var.set(rid)
        start = time.perf_counter()
        try:
            response = await call_next(request)
        finally:
            request_id_var.reset(token)
        elapsed_ms = (time.perf_counter() - start) * 1000
        response.headers[REQUEST_ID_HEADER] = rid  # type: ignore[attr-defined]
        if request.url.path not in ("/healthz", "/readyz"):
            log.info("%s %s -> %s in %.1f ms", request.method, request.url.path,
                     getattr(response, "status_code", "?"), elapsed_ms)
        return response
