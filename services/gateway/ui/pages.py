"""The web UI's pages: server-rendered Jinja2 over the same functions as the /v1 API, plus one
small script (`static/app.js`) for drag-and-drop upload and "load more" paging.

Why this stack: every page is an HTML form or a link, so search, filters, sort, paging, find
similar and the image page work without JavaScript, with the browser's own keyboard and
screen-reader behaviour; the script only enhances (per-file upload progress needs XHR). No
build step, no framework, nothing from a CDN: two static files served by the gateway itself.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path as FsPath
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from services.gateway import images, search, similar
from services.gateway.api.params import ImageId
from services.gateway.api.similar import read_photo_form
from services.gateway.core.auth import requires
from services.gateway.core.body_limit import accepts_body
from services.gateway.core.context import ContextDep, GatewayContext, SchemaReady
from services.gateway.ui.forms import SIZES, SearchForm, search_form
from shared.db import ImageRecord
from shared.errors import CapsearchError, NotFound
from shared.schemas import ImagePublic, SearchResult, SourceCount

log = logging.getLogger(__name__)

HERE = FsPath(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
PAGE_SIZE = 24
# the pages load nothing from elsewhere: scripts, styles and images from this origin only
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' blob: data:; "
                                "style-src 'self'; script-src 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

router = APIRouter(include_in_schema=False, dependencies=[requires("search"), SchemaReady])
# the search page's photo form (declared, so its scope is checked before the body is read)
PHOTO_FORM: dict[str, Any] = {"requestBody": {"content": {"multipart/form-data": {}}}}


def mount_static(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else ""


def _size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


templates.env.filters["when"] = _when
templates.env.filters["filesize"] = _size


def render(request: Request, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, values, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def not_found(request: Request, what: str) -> HTMLResponse:
    return render(request, "message.html", status_code=404, title="Not found",
                  message=f"{what} is not in the collection.")


def _sources(context: GatewayContext) -> list[SourceCount]:
    with context.session_factory() as session:
        return images.list_sources(session, 500)


async def _recent(context: GatewayContext, form: SearchForm) -> list[SearchResult]:
    """The newest images (the home page without a query), within the filters: newest upload
    first, or newest capture first when the form sorts by capture date."""
    filters = form.filters()

    def _load() -> list[SearchResult]:
        with context.session_factory() as session:
            page = images.list_images(session=session, status=None, limit=PAGE_SIZE, offset=0,
                                      filters=filters,
                                      sort="taken" if form.sort == "taken" else "date")
        return [SearchResult(id=i.id, score=0.0, caption=i.caption, filename=i.filename,
                             content_url=i.content_url, thumbnail_url=i.thumbnail_url,
                             source=i.source, created_at=i.created_at, taken_at=i.taken_at,
                             width=i.width,
                             height=i.height, size_bytes=i.size_bytes) for i in page.images]

    return await anyio.to_thread.run_sync(_load)


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, context: ContextDep,
               form: Annotated[SearchForm, Depends(search_form)],
               fragment: bool = False) -> HTMLResponse:
    """The search page: the form, and results when there is a query (or the newest images)."""
    results: list[SearchResult] = []
    next_cursor = None
    searched = bool(form.q)
    try:
        if searched:
            query = form.query(context.settings, k=PAGE_SIZE)
            if query is not None:
                page = await search.search_page(
                    query=query, settings=context.settings, encoder=context.encoder,
                    index=context.index, session_factory=context.session_factory)
                results, next_cursor = page.results, page.next_cursor
        else:
            results = await _recent(context, form)
    except CapsearchError as exc:
        form.errors.append(exc.message)
    values = {"form": form, "results": results, "next_cursor": next_cursor,
              "searched": searched, "show_scores": searched}
    if fragment:
        return render(request, "_results.html", **values)
    sources = await anyio.to_thread.run_sync(_sources, context)
    return render(request, "search.html", sizes=SIZES, sources=sources, **values)


@router.get("/images/{image_id}", response_class=HTMLResponse)
async def image_page(request: Request, context: ContextDep, image_id: ImageId
                     ) -> HTMLResponse:
    """One photo: the full image, its caption, metadata, find similar."""

    def _load() -> ImagePublic | None:
        with context.session_factory() as session:
            image = session.get(ImageRecord, image_id)
            return images.describe_image(session=session, image=image) if image else None

    image = await anyio.to_thread.run_sync(_load)
    if image is None:
        return not_found(request, f"Image {image_id}")
    return render(request, "image.html", image=image)


@router.get("/similar/{image_id}", response_class=HTMLResponse)
async def similar_page(request: Request, context: ContextDep, image_id: ImageId
                       ) -> HTMLResponse:
    """Photos like this one, it first."""
    settings = context.settings

    def _example() -> similar.Example:
        with context.session_factory() as session:
            return similar.example_by_id(session, image_id, settings.embedding_model)

    try:
        example = await anyio.to_thread.run_sync(_example)
        found = await similar.find_similar(
            example=example, k=min(PAGE_SIZE, settings.search_max_k), min_score=-1.0,
            nprobe=None, index=context.index, session_factory=context.session_factory)
    except NotFound:
        return not_found(request, f"Image {image_id}")
    except CapsearchError as exc:
        return render(request, "message.html", status_code=exc.status_code,
                      title="Cannot find similar photos", message=exc.message)
    return render(request, "similar.html", example_id=image_id, results=found.results,
                  show_scores=True, next_cursor=None)


@router.post("/similar", response_class=HTMLResponse, dependencies=[accepts_body("file")],
             openapi_extra=PHOTO_FORM)
async def similar_photo_page(request: Request, context: ContextDep) -> HTMLResponse:
    """Photos like one the user dropped or chose on the search page (kept nowhere)."""
    settings = context.settings
    try:
        _, data = await read_photo_form(request, settings.max_upload_bytes)
        example = await anyio.to_thread.run_sync(lambda: _by_bytes(context, data))
        if example is None:
            example = await similar.example_by_photo(data, settings=settings,
                                                     photos=context.photos)
        found = await similar.find_similar(
            example=example, k=min(PAGE_SIZE, settings.search_max_k), min_score=-1.0,
            nprobe=None, index=context.index, session_factory=context.session_factory)
    except CapsearchError as exc:
        return render(request, "message.html", status_code=exc.status_code,
                      title="Cannot find similar photos", message=exc.message)
    return render(request, "similar.html", example_id=example.image_id, results=found.results,
                  show_scores=True, next_cursor=None)


def _by_bytes(context: GatewayContext, data: bytes) -> similar.Example | None:
    with context.session_factory() as session:
        return similar.example_by_bytes(session, data, context.settings.embedding_model)


@router.get("/upload", response_class=HTMLResponse)
async def upload_page(request: Request, context: ContextDep) -> HTMLResponse:
    """Drag-and-drop upload with per-file progress and status."""
    return render(request, "upload.html", max_bytes=context.settings.max_upload_bytes)
