"""/healthz and /readyz: is the gateway alive, and can it reach the database and the blobs?"""

from __future__ import annotations

from functools import partial

import anyio
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from services.gateway.core.context import ContextDep
from shared.errors import CapsearchError
from shared.schemas import ErrorResponse, Health
from shared.storage import BlobStore
from shared.web import error_response

router = APIRouter(tags=["health"])


def _failure(exc: Exception) -> str:
    detail = exc.message if isinstance(exc, CapsearchError) else f"{type(exc).__name__}: {exc}"
    return f"failed: {detail[:200]}"


def check_readiness(*, session_factory: sessionmaker[Session], store: BlobStore
                    ) -> dict[str, str]:
    """`ok` or `failed: why` per dependency (blocking: run it in the thread pool)."""
    checks: dict[str, str] = {}
    try:
        with session_factory() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = _failure(exc)
    try:
        store.ping()
        checks["blob_store"] = "ok"
    except Exception as exc:
        checks["blob_store"] = _failure(exc)
    return checks


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (checks nothing else)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": ErrorResponse}})
async def readyz(context: ContextDep) -> Health | JSONResponse:
    """The database answers and the blob store is reachable."""
    checks = await anyio.to_thread.run_sync(partial(
        check_readiness, session_factory=context.session_factory, store=context.store))
    failing = {name: result for name, result in checks.items() if result != "ok"}
    if failing:
        message = "; ".join(f"{name} {result}" for name, result in failing.items())
        return error_response(503, "not_ready", message)
    return Health(status="ok", checks=checks)
