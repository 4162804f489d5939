"""The web UI: server-rendered Jinja2 pages over the same functions as the /v1 API, plus one
small script (`static/app.js`) for drag-and-drop upload and "load more" paging.

Why this stack: every page is an HTML form or a link, so search, filters, sort, paging, find
similar and the image page work without JavaScript, with the browser's own keyboard and
screen-reader behaviour; the script only enhances (per-file upload progress needs XHR). No
build step, no framework, nothing from a CDN: two static files served by the gateway itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path as FsPath
from typing import Annotated, Any
from urllib.parse import urlencode

import anyio
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from services.gateway import images, retrieval, similar
from services.gateway.dbready import SchemaReady
from services.gateway.deps import MAX_ID, ContextDep, GatewayContext, require_scope
from services.gateway.filters import ImageFilters, SourceCount, list_sources, parse_instant
from services.gateway.retrieval import SearchOptions
from services.gateway.search import validate_search_query
from shared.db import ImageRecord
from shared.errors import CapsearchError, NotFound
from shared.schemas import ImagePublic, SearchResult

log = logging.getLogger(__name__)

HERE = FsPath(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
PAGE_SIZE = 24
# size choices of the filter menu: (label, min megapixels, max megapixels)
SIZES: dict[str, tuple[str, float | None, float | None]] = {
    "": ("any size", None, None),
    "small": ("small (under 1 MP)", None, 1.0),
    "medium": ("medium (1 to 4 MP)", 1.0, 4.0),
    "large": ("large (over 4 MP)", 4.0, None),
}
# the pages load nothing from elsewhere: scripts, styles and images from this origin only
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' blob: data:; "
                                "style-src 'self'; script-src 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

router = APIRouter(include_in_schema=False,
                   dependencies=[Depends(require_scope("search")), SchemaReady])


def mount_static(app: Any) -> None:
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


@dataclass
class SearchForm:
    """What the search form holds, as typed (strings), for re-filling it."""

    q: str = ""
    min_score: str = ""
    sort: str = "relevance"
    date_from: str = ""
    date_to: str = ""
    source: str = ""
    size: str = ""
    hybrid: bool = False
    cursor: str = ""
    errors: list[str] = field(default_factory=list)

    def options(self) -> SearchOptions:
        """SearchOptions from the form; a bad field is noted in `errors` and left out."""
        start = end = None
        try:
            start = parse_instant(self.date_from, name="from", end_of_day=False) \
                if self.date_from else None
            end = parse_instant(self.date_to, name="to", end_of_day=True) \
                if self.date_to else None
        except CapsearchError as exc:
            self.errors.append(exc.message)
        _, low, high = SIZES.get(self.size, SIZES[""])
        filters = ImageFilters(date_from=start, date_to=end, source=self.source or None,
                               min_megapixels=low, max_megapixels=high)
        return SearchOptions(sort="date" if self.sort == "date" else "relevance",
                             filters=filters, hybrid=self.hybrid, cursor=self.cursor or None)

    def query_string(self, cursor: str | None = None) -> str:
        """This form as a URL query (with a cursor: the link to the next page)."""
        values = {"q": self.q, "min_score": self.min_score, "sort": self.sort,
                  "date_from": self.date_from, "date_to": self.date_to, "source": self.source,
                  "size": self.size, "hybrid": "1" if self.hybrid else "", "form": "1",
                  "cursor": cursor or ""}
        return urlencode({k: v for k, v in values.items() if v})

    def threshold(self) -> float:
        try:
            value = float(self.min_score) if self.min_score else -1.0
        except ValueError:
            self.errors.append("the relevance threshold must be a number")
            return -1.0
        return min(max(value, -1.0), 1.0)


def search_form(
    request: Request,
    q: str = "", min_score: str = "", sort: str = "relevance", date_from: str = "",
    date_to: str = "", source: str = "", size: str = "", hybrid: str = "", cursor: str = "",
) -> SearchForm:
    # a submitted form carries `form=1`: then an unchecked box means off; a bare link
    # (`/?q=dog`) gets the server's default
    if "form" in request.query_params or "hybrid" in request.query_params:
        use_hybrid = hybrid in ("1", "on", "true")
    else:
        use_hybrid = request.app.state.context.settings.ranking.hybrid
    return SearchForm(q=q.strip(), min_score=min_score, sort=sort, date_from=date_from,
                      date_to=date_to, source=source, size=size, hybrid=use_hybrid,
                      cursor=cursor)


SearchFormDep = Annotated[SearchForm, Depends(search_form)]


def _sources(context: GatewayContext) -> list[SourceCount]:
    with context.session_factory() as session:
        return list_sources(session, 500)


async def _recent(context: GatewayContext, form: SearchForm) -> list[SearchResult]:
    """The newest indexed images (the home page without a query), within the filters."""
    options = form.options()

    def _load() -> list[SearchResult]:
        with context.session_factory() as session:
            page = images.list_images(session=session, status=None, limit=PAGE_SIZE, offset=0,
                                      filters=options.filters)
        return [SearchResult(id=i.id, score=0.0, caption=i.caption, filename=i.filename,
                             content_url=i.content_url, thumbnail_url=i.thumbnail_url,
                             source=i.source, created_at=i.created_at, width=i.width,
                             height=i.height, size_bytes=i.size_bytes) for i in page.images]

    return await anyio.to_thread.run_sync(_load)


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, context: ContextDep, form: SearchFormDep,
               fragment: bool = False) -> HTMLResponse:
    """The search page: the form, and results when there is a query (or the newest images)."""
    results: list[SearchResult] = []
    next_cursor = None
    searched = bool(form.q)
    try:
        if searched:
            query = validate_search_query(settings=context.settings, q=form.q, k=PAGE_SIZE,
                                          min_score=form.threshold(), nprobe=None)
            options = form.options()
            if not form.errors:
                page = await retrieval.search_page(
                    query=query, options=options, settings=context.settings,
                    encoder=context.encoder, index=context.index,
                    session_factory=context.session_factory)
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


ImageIdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


def not_found(request: Request, what: str) -> HTMLResponse:
    return render(request, "message.html", status_code=404, title="Not found",
                  message=f"{what} is not in the collection.")


@router.get("/images/{image_id}", response_class=HTMLResponse)
async def image_page(request: Request, context: ContextDep, image_id: ImageIdPath
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
async def similar_page(request: Request, context: ContextDep, image_id: ImageIdPath
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


@router.get("/upload", response_class=HTMLResponse)
async def upload_page(request: Request, context: ContextDep) -> HTMLResponse:
    """Drag-and-drop upload with per-file progress and status."""
    return render(request, "upload.html", max_bytes=context.settings.max_upload_bytes)
