"""Readiness: can this gateway reach the database and the blob store right now?"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.errors import CapsearchError
from shared.storage import BlobStore


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
