"""The web UI's near-duplicates pages: review each group's photos side by side and delete the
extras. The delete form is a state-changing POST: `OriginGuard` refuses it from another site,
and it needs a key's or a signed-in session's `write` scope, as the upload form does."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker

from services.gateway import duplicates, images
from services.gateway.core.auth import requires
from services.gateway.core.context import ContextDep, SchemaReady
from services.gateway.ui.pages import render
from shared.errors import CapsearchError
from shared.schemas import DuplicateGroupPage, DuplicateGroupPublic, ImagePublic

router = APIRouter(include_in_schema=False, dependencies=[SchemaReady])
GROUPS_PER_PAGE = 20


@router.get("/duplicates", response_class=HTMLResponse, dependencies=[requires("search")])
async def duplicates_page(request: Request, context: ContextDep, cursor: str | None = None,
                          deleted: int = 0) -> HTMLResponse:
    """Groups of near-duplicate photos, thumbnails side by side, a delete form per group."""

    def _load() -> tuple[DuplicateGroupPage, dict[int, ImagePublic]]:
        with context.session_factory() as session:
            page = duplicates.list_groups(session, cursor=cursor, limit=GROUPS_PER_PAGE)
            ids = [i for g in page.groups for i in g.ids]
            found = images.lookup_images(session=session, image_ids=ids).images
        return page, {image.id: image for image in found}

    try:
        page, photos = await anyio.to_thread.run_sync(_load)
    except CapsearchError as exc:
        return render(request, "message.html", status_code=exc.status_code,
                      title="Cannot list near-duplicates", message=exc.message)
    return render(request, "duplicates.html", page=page, photos=photos, deleted=deleted,
                  active="duplicates")


@router.post("/duplicates/delete", dependencies=[requires("write")])
async def delete_duplicates(request: Request, context: ContextDep,
                            group: Annotated[int, Form(ge=1)],
                            delete: Annotated[list[int], Form()]) -> Response:
    """Delete the photos ticked in one group (never all of it), back to the list."""
    try:
        found = await anyio.to_thread.run_sync(_group, context.session_factory, group)
        gone = await duplicates.delete_extras(
            group=found, delete=delete, session_factory=context.session_factory,
            store=context.store, index=context.index)
    except CapsearchError as exc:
        return render(request, "message.html", status_code=exc.status_code,
                      title="Cannot delete these photos", message=exc.message)
    return RedirectResponse(f"/duplicates?deleted={len(gone)}", status_code=303)


def _group(factory: sessionmaker[Session], image_id: int) -> DuplicateGroupPublic:
    with factory() as session:
        return duplicates.group_of(session, image_id)
