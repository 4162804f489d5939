"""GET /v1/search: every query parameter read and checked here, then one call to `search.py`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from services.gateway import search
from services.gateway.api.params import ImageFiltersDep
from services.gateway.api.responses import ERRORS
from services.gateway.core.auth import requires
from services.gateway.core.context import ContextDep, SchemaReady, SettingsDep
from services.gateway.search import SearchQuery, Sort
from shared.schemas import SearchResults

router = APIRouter(tags=["search"], responses=ERRORS)


async def search_query(  # async: no thread-pool hop for a pure check
    settings: SettingsDep,
    filters: ImageFiltersDep,
    q: Annotated[str, Query(description="what to look for, in words")],
    k: Annotated[int | None, Query(ge=1, description="how many results")] = None,
    min_score: Annotated[float, Query(ge=-1.0, le=1.0, description="drop weaker hits")] = -1.0,
    nprobe: Annotated[int | None, Query(ge=1, le=1_000_000, description="clusters to scan")
                      ] = None,
    sort: Annotated[Sort, Query(description=(
        "relevance (best first), date (newest upload first) or taken (newest capture "
        "first, photos without a capture date after), among the matches above min_score"))
                    ] = "relevance",
    hybrid: Annotated[bool | None, Query(description=(
        "fuse caption full-text matches into the ranking (default: the ranking.hybrid "
        "setting)"))] = None,
    cursor: Annotated[str | None, Query(max_length=200, description=(
        "next_cursor of the previous page"))] = None,
) -> SearchQuery:
    """The search the query string asks for, checked against the settings' caps."""
    return search.check_query(settings=settings, q=q, k=k, min_score=min_score, nprobe=nprobe,
                              sort=sort, filters=filters, cursor=cursor,
                              hybrid=settings.ranking.hybrid if hybrid is None else hybrid)


@router.get("/v1/search", response_model=SearchResults,
            dependencies=[requires("search"), SchemaReady])
async def search_images(query: Annotated[SearchQuery, Depends(search_query)],
                        context: ContextDep) -> Response:
    """Images whose captions best match the text: filtered, by relevance, upload date or
    capture date (`taken`), paged. Every result carries `taken_at` (null: no capture date)."""
    page = await search.search_page(query=query, settings=context.settings,
                                    encoder=context.encoder, index=context.index,
                                    session_factory=context.reads)
    # built and checked by `search_page` already: serialised once, not validated again
    return Response(page.model_dump_json(), media_type="application/json")
