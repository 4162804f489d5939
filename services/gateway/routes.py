"""The public /v1 REST API: thin routes over services.gateway.{uploads,images,search}."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, File, Form, Header, Query, Response, UploadFile
from fastapi.responses import JSONResponse

from services.gateway import health, images, retrieval, uploads
from services.gateway.dbready import SchemaReady
from services.gateway.deps import (
    MAX_ID,
    ContextDep,
    ImageDep,
    SearchQueryDep,
    SessionDep,
    StoreDep,
    require_scope,
)
from services.gateway.filters import ImageFiltersDep
from services.gateway.retrieval import SearchOptionsDep
from services.gateway.schemas import ImagePage
from shared.db import ImageStatus
from shared.schemas import (
    ErrorResponse,
    Health,
    ImageLookup,
    ImageLookupResult,
    ImagePublic,
    RebuildStatus,
    SearchResults,
    UploadResponse,
)
from shared.web import error_response

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse}
    for code in (400, 401, 403, 404, 409, 413, 415, 422, 429, 502, 503, 504)
}

# the upload route alone: app.py mounts it with body and file-count limits from the settings
upload_router = APIRouter(tags=["images"], responses=ERRORS)
router = APIRouter(responses=ERRORS)
health_router = APIRouter(tags=["health"])

WriteScope = Depends(require_scope("write"))
SearchScope = Depends(require_scope("search"))
AdminScope = Depends(require_scope("admin"))


@upload_router.post("/v1/images", status_code=202, response_model=UploadResponse,
                    dependencies=[WriteScope])
async def upload_images(
    context: ContextDep,
    files: Annotated[list[UploadFile], File(description="one or more image files")],
    source: Annotated[str, Form(max_length=1024, description="where they came from")] = "upload",
) -> UploadResponse:
    """Check and store images, then queue them for captioning (re-uploads are no-ops)."""
    return await uploads.ingest_uploads(
        uploads=files, source=source, settings=context.settings,
        factory=context.session_factory, store=context.store, queue=context.queue)


@router.get("/v1/images", response_model=ImagePage, tags=["images"],
            dependencies=[SearchScope])
def list_images(
    session: SessionDep,
    filters: ImageFiltersDep,
    status: ImageStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> ImagePage:
    """A page of images, newest first; filters as in search (date, source, size)."""
    return images.list_images(session=session, status=status, limit=limit, offset=offset,
                              filters=filters)


@router.post("/v1/images/lookup", response_model=ImageLookupResult, tags=["images"],
             dependencies=[SearchScope])
def lookup_images(body: ImageLookup, session: SessionDep) -> ImageLookupResult:
    """Up to 1,000 images' records (status, error, latest caption) in one call: poll an
    ingest's progress with this, not one `GET /v1/images/{id}` per image. Unknown ids are
    listed under `missing`."""
    return images.lookup_images(session=session, image_ids=body.ids)


@router.get("/v1/images/{image_id}", response_model=ImagePublic, tags=["images"],
            dependencies=[SearchScope])
def read_image(image: ImageDep, session: SessionDep) -> ImagePublic:
    """One image: status, error, latest caption, metadata and URLs."""
    return images.describe_image(session=session, image=image)


def _blob_response(blob: images.Blob, if_none_match: str | None) -> Response:
    headers = {"ETag": blob.etag, "Cache-Control": blob.cache_control}
    if if_none_match is not None and blob.etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(content=blob.data, media_type=blob.content_type, headers=headers)


@router.get("/v1/images/{image_id}/content", tags=["images"], dependencies=[SearchScope],
            response_class=Response)
def read_content(image: ImageDep, store: StoreDep,
                 if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """The original bytes, ETag = sha256."""
    return _blob_response(images.read_blob(store=store, image=image, kind="original"),
                          if_none_match)


@router.get("/v1/images/{image_id}/thumbnail", tags=["images"], dependencies=[SearchScope],
            response_class=Response)
def read_thumbnail(image: ImageDep, store: StoreDep,
                   if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """A small JPEG for result grids."""
    return _blob_response(images.read_blob(store=store, image=image, kind="thumbnail"),
                          if_none_match)


@router.delete("/v1/images/{image_id}", status_code=204, response_class=Response,
               tags=["images"], dependencies=[WriteScope])
async def delete_image(image: ImageDep, context: ContextDep) -> Response:
    """Remove an image from the index, the database and the blob store."""
    await images.delete_image(image_id=image.id, session_factory=context.session_factory,
                              store=context.store, index=context.index)
    return Response(status_code=204)


@router.get("/v1/search", response_model=SearchResults, tags=["search"],
            dependencies=[SearchScope, SchemaReady])
async def search_images(query: SearchQueryDep, options: SearchOptionsDep, context: ContextDep
                        ) -> SearchResults:
    """Images whose captions best match the text: filtered, by relevance or date, paged."""
    return await retrieval.search_page(query=query, options=options, settings=context.settings,
                                       encoder=context.encoder, index=context.index,
                                       session_factory=context.session_factory)


@router.post("/v1/index/rebuild", response_model=RebuildStatus, status_code=202,
             tags=["index"], dependencies=[AdminScope])
async def rebuild_index(context: ContextDep) -> RebuildStatus:
    """Refit the index in the background (the current version serves until the swap);
    poll GET /v1/index/rebuild for its state."""
    return await context.index.start_rebuild()


@router.get("/v1/index/rebuild", response_model=RebuildStatus, tags=["index"],
            dependencies=[AdminScope])
async def rebuild_index_status(context: ContextDep) -> RebuildStatus:
    """The state of the last rebuild: building, done (with the new version) or failed."""
    return await context.index.rebuild_status()


@health_router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (checks nothing else)."""
    return Health(status="ok")


@health_router.get("/readyz", response_model=Health,
                   responses={503: {"model": ErrorResponse}})
async def readyz(context: ContextDep) -> Health | JSONResponse:
    """The database answers and the blob store is reachable."""
    checks = await anyio.to_thread.run_sync(partial(
        health.check_readiness, session_factory=context.session_factory, store=context.store))
    failing = {name: result for name, result in checks.items() if result != "ok"}
    if failing:
        message = "; ".join(f"{name} {result}" for name, result in failing.items())
        return error_response(503, "not_ready", message)
    return Health(status="ok", checks=checks)
