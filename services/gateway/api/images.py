"""/v1/images and /v1/sources: upload, list, look up, read, delete (`images.py`, `uploads.py`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile

from services.gateway import images, uploads
from services.gateway.api.params import MAX_ID, ImageFiltersDep, ImageId
from services.gateway.api.responses import ERRORS, IfNoneMatch, blob_response
from services.gateway.core.auth import requires
from services.gateway.core.body_limit import accepts_body
from services.gateway.core.context import ContextDep, SessionDep, StoreDep
from shared.db import ImageRecord, ImageStatus
from shared.errors import NotFound
from shared.schemas import (
    ImageLookup,
    ImageLookupResult,
    ImagePage,
    ImagePublic,
    SourceCount,
    UploadResponse,
)

# the upload route alone: app.py mounts it with body and file-count limits from the settings
upload_router = APIRouter(tags=["images"], responses=ERRORS)
router = APIRouter(tags=["images"], responses=ERRORS)


def get_image(image_id: ImageId, session: SessionDep) -> ImageRecord:
    """The image named by the path, or 404."""
    image = session.get(ImageRecord, image_id)
    if image is None:
        raise NotFound(f"image {image_id} not found")
    return image


ImageDep = Annotated[ImageRecord, Depends(get_image)]


@upload_router.post("/v1/images", status_code=202, response_model=UploadResponse,
                    dependencies=[requires("write"), accepts_body("upload")])
async def upload_images(
    context: ContextDep,
    files: Annotated[list[UploadFile], File(description="one or more image files")],
    source: Annotated[str, Form(max_length=1024, description="where they came from")] = "upload",
) -> UploadResponse:
    """Check and store images, then queue them for captioning (re-uploads are no-ops)."""
    return await uploads.ingest_uploads(
        uploads=files, source=source, settings=context.settings,
        factory=context.session_factory, store=context.store, queue=context.queue)


@router.get("/v1/images", response_model=ImagePage, dependencies=[requires("search")])
def list_images(
    session: SessionDep,
    filters: ImageFiltersDep,
    status: ImageStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    sort: Annotated[images.ListSort, Query(description=(
        "date (newest upload first) or taken (newest capture first, photos without a "
        "capture date after)"))] = "date",
) -> ImagePage:
    """A page of images, newest first; filters as in search (upload and capture dates,
    source, size)."""
    return images.list_images(session=session, status=status, limit=limit, offset=offset,
                              filters=filters, sort=sort)


@router.post("/v1/images/lookup", response_model=ImageLookupResult,
             dependencies=[requires("search")])
def lookup_images(body: ImageLookup, session: SessionDep) -> ImageLookupResult:
    """Up to 1,000 images' records (status, error, latest caption) in one call: poll an
    ingest's progress with this, not one `GET /v1/images/{id}` per image. Unknown ids are
    listed under `missing`."""
    return images.lookup_images(session=session, image_ids=body.ids)


@router.get("/v1/images/{image_id}", response_model=ImagePublic,
            dependencies=[requires("search")])
def read_image(image: ImageDep, session: SessionDep) -> ImagePublic:
    """One image: status, error, latest caption, metadata and URLs."""
    return images.describe_image(session=session, image=image)


@router.get("/v1/images/{image_id}/content", dependencies=[requires("search")],
            response_class=Response)
def read_content(image: ImageDep, store: StoreDep, if_none_match: IfNoneMatch = None) -> Response:
    """The original bytes, ETag = sha256."""
    return blob_response(images.read_blob(store=store, image=image, kind="original"),
                         if_none_match)


@router.get("/v1/images/{image_id}/thumbnail", dependencies=[requires("search")],
            response_class=Response)
def read_thumbnail(image: ImageDep, store: StoreDep,
                   if_none_match: IfNoneMatch = None) -> Response:
    """A small JPEG for result grids."""
    return blob_response(images.read_blob(store=store, image=image, kind="thumbnail"),
                         if_none_match)


@router.delete("/v1/images/{image_id}", status_code=204, response_class=Response,
               dependencies=[requires("write")])
async def delete_image(image: ImageDep, context: ContextDep) -> Response:
    """Remove an image from the index, the database and the blob store."""
    await images.delete_image(image_id=image.id, session_factory=context.session_factory,
                              store=context.store, index=context.index)
    return Response(status_code=204)


@router.get("/v1/sources", response_model=list[SourceCount], dependencies=[requires("search")])
def read_sources(session: SessionDep,
                 limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> list[SourceCount]:
    """The folders/sources of the collection with their image counts (for the source filter)."""
    return images.list_sources(session, limit)
