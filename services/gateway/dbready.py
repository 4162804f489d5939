"""A route dependency for routes that open sessions themselves (not through SessionDep):
the schema must exist first, or the caller gets 503 database_unavailable, not a 500."""

from __future__ import annotations

from fastapi import Depends

from services.gateway.deps import ContextDep


def schema_ready(context: ContextDep) -> None:
    """Blocking (FastAPI runs it in the thread pool); a flag check once the schema exists."""
    schema = getattr(context, "schema", None)
    if schema is not None:
        schema.ensure()


SchemaReady = Depends(schema_ready)
