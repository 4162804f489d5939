"""The search service's HTTP routes: validate, hand the work to the pool, return a schema."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from services.search.deps import DupServiceDep, ServiceDep, WorkDep
from services.search.service import IndexService, remove_from_collection
from services.search.validation import as_matrix
from shared.schemas import (
    Health,
    IndexAddRequest,
    IndexChangeResponse,
    IndexRemoveRequest,
    IndexStats,
    RebuildResponse,
    RebuildStatus,
    SearchRequest,
    SearchResponse,
)

router = APIRouter()
# the near-duplicate vectors' index: the same operations on its own `IndexService`
dup_router = APIRouter(prefix="/v1/duplicates")


@router.post("/v1/search", response_model=SearchResponse)
async def search(body: SearchRequest, service: ServiceDep, work: WorkDep) -> Response:
    found = await work.run(lambda: service.search(as_matrix(body.vector), body.k, body.nprobe))
    # made by the index: serialised once, without FastAPI's validation pass over every hit
    return Response(found.model_dump_json(), media_type="application/json")


def add_items(service: IndexService, body: IndexAddRequest) -> IndexChangeResponse:
    """An add request's vectors into an index (the caption index or the duplicate index)."""
    vectors = as_matrix([item.vector for item in body.items], rows=len(body.items))
    return service.add([item.image_id for item in body.items], vectors)


@router.post("/v1/index/add", response_model=IndexChangeResponse)
async def add(body: IndexAddRequest, service: ServiceDep, work: WorkDep) -> IndexChangeResponse:
    return await work.run(add_items, service, body)


@router.post("/v1/index/remove", response_model=IndexChangeResponse)
async def remove(body: IndexRemoveRequest, service: ServiceDep, work: WorkDep,
                 request: Request) -> IndexChangeResponse:
    """Images out of the collection: the caption index and this service's duplicate index."""
    return await work.run(remove_from_collection, service, request.app.state.dup_service,
                          body.image_ids)


@router.post("/v1/index/rebuild", response_model=RebuildStatus | RebuildResponse,
             status_code=202)
async def rebuild(service: ServiceDep, work: WorkDep, wait: bool = False
                  ) -> RebuildStatus | RebuildResponse | JSONResponse:
    """Start a rebuild in the background (202 + status to poll); `?wait=true` blocks (200)."""
    if wait:
        done = await work.run(service.rebuild)
        return JSONResponse(status_code=200, content=done.model_dump())
    return service.start_rebuild()


@router.get("/v1/index/rebuild", response_model=RebuildStatus)
async def rebuild_status(service: ServiceDep) -> RebuildStatus:
    return service.rebuild_status()


@router.get("/v1/index/stats", response_model=IndexStats)
async def stats(service: ServiceDep, work: WorkDep) -> IndexStats:
    return await work.run(service.stats)  # the drift figures read the database


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health)
async def readyz(request: Request, service: ServiceDep) -> Health | JSONResponse:
    if service.loaded:
        return Health(status="ready", checks={"index": "loaded"})
    problem = getattr(request.app.state, "load_error", None)
    body = Health(status="loading", checks={"index": problem or "loading"})
    return JSONResponse(status_code=503, content=body.model_dump())


@dup_router.post("/search", response_model=SearchResponse)
async def search_duplicates(body: SearchRequest, service: DupServiceDep, work: WorkDep
                            ) -> Response:
    found = await work.run(lambda: service.search(as_matrix(body.vector), body.k, body.nprobe))
    return Response(found.model_dump_json(), media_type="application/json")


@dup_router.post("/index/add", response_model=IndexChangeResponse)
async def add_duplicates(body: IndexAddRequest, service: DupServiceDep, work: WorkDep
                         ) -> IndexChangeResponse:
    return await work.run(add_items, service, body)


@dup_router.post("/index/remove", response_model=IndexChangeResponse)
async def remove_duplicates(body: IndexRemoveRequest, service: DupServiceDep, work: WorkDep
                            ) -> IndexChangeResponse:
    return await work.run(service.remove, body.image_ids)


@dup_router.get("/index/stats", response_model=IndexStats)
async def duplicate_stats(service: DupServiceDep, work: WorkDep) -> IndexStats:
    return await work.run(service.stats)
