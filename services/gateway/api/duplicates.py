"""GET /v1/duplicates: near-duplicate groups, paged (`duplicates.py`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.gateway import duplicates
from services.gateway.api.params import ImageId
from services.gateway.api.responses import ERRORS
from services.gateway.core.auth import requires
from services.gateway.core.context import SessionDep
from shared.schemas import DuplicateGroupPage, DuplicateGroupPublic

router = APIRouter(tags=["duplicates"], responses=ERRORS)


@router.get("/v1/duplicates", response_model=DuplicateGroupPage,
            dependencies=[requires("search")])
def list_duplicates(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=32,
                                        description="a page's `next_cursor`")] = None,
) -> DuplicateGroupPage:
    """Groups of photos judged the same (resized, re-encoded, lightly cropped or colour-edited
    copies), each `{"ids", "score"}` with `score` the weakest cosine linking them; in the order
    the groups formed. Delete the extras with `DELETE /v1/images/{id}`."""
    return duplicates.list_groups(session, cursor=cursor, limit=limit)


@router.get("/v1/images/{image_id}/duplicates", response_model=DuplicateGroupPublic,
            dependencies=[requires("search")])
def image_duplicates(image_id: ImageId, session: SessionDep) -> DuplicateGroupPublic:
    """The group of one photo (404 `no_duplicates` when it has none)."""
    return duplicates.group_of(session, image_id)
