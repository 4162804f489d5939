"""/v1/index/rebuild: refit the search index in the background, and follow the rebuild."""

from __future__ import annotations

from fastapi import APIRouter

from services.gateway.api.responses import ERRORS
from services.gateway.core.auth import requires
from services.gateway.core.context import ContextDep
from shared.schemas import RebuildStatus

router = APIRouter(tags=["index"], responses=ERRORS)


@router.post("/v1/index/rebuild", response_model=RebuildStatus, status_code=202,
             dependencies=[requires("admin")])
async def rebuild_index(context: ContextDep) -> RebuildStatus:
    """Refit the index in the background (the current version serves until the swap);
    poll GET /v1/index/rebuild for its state."""
    return await context.index.start_rebuild()


@router.get("/v1/index/rebuild", response_model=RebuildStatus,
            dependencies=[requires("admin")])
async def rebuild_index_status(context: ContextDep) -> RebuildStatus:
    """The state of the last rebuild: building, done (with the new version) or failed."""
    return await context.index.rebuild_status()
