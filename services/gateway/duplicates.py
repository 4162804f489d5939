"""Near-duplicate groups, a page at a time, and deleting a group's extras (no web imports).

The caption worker finds and records the groups as photos are ingested
(`services/caption/grouping.py`); this reads them (`shared/db/duplicates.py`) and deletes
photos through `images.delete_image`, as `DELETE /v1/images/{id}` does.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker

from services.gateway import images
from shared.clients import IndexClient
from shared.db.duplicates import group_of_image, group_page
from shared.errors import NotFound, ValidationFailed
from shared.schemas import DuplicateGroupPage, DuplicateGroupPublic
from shared.storage import BlobStore


def decode_cursor(cursor: str | None) -> int:
    """A page's `next_cursor` → the group id to continue after (0: the first page)."""
    if cursor is None or cursor == "":
        return 0
    if not cursor.isdigit() or len(cursor) > 19:
        raise ValidationFailed("cursor: not a cursor of GET /v1/duplicates")
    return int(cursor)


def list_groups(session: Session, *, cursor: str | None, limit: int) -> DuplicateGroupPage:
    """One page of groups, in the order the collection formed them (oldest photo first)."""
    page = group_page(session, after=decode_cursor(cursor), limit=limit)
    return DuplicateGroupPage(
        groups=[DuplicateGroupPublic(ids=list(g.ids), score=g.score) for g in page.groups],
        limit=limit, next_cursor=None if page.next_after is None else str(page.next_after))


def group_of(session: Session, image_id: int) -> DuplicateGroupPublic:
    """The group this photo is in; 404 when it has no near-duplicate."""
    group = group_of_image(session, image_id)
    if group is None:
        raise NotFound(f"image {image_id} has no near-duplicates", code="no_duplicates")
    return DuplicateGroupPublic(ids=list(group.ids), score=group.score)


async def delete_extras(*, group: DuplicateGroupPublic, delete: Sequence[int],
                        session_factory: sessionmaker[Session], store: BlobStore,
                        index: IndexClient) -> list[int]:
    """Delete the chosen photos of a group, keeping at least one of it; the ids deleted."""
    chosen = sorted(set(int(i) for i in delete))
    if not chosen:
        raise ValidationFailed("delete: choose the photos to delete")
    strangers = [i for i in chosen if i not in group.ids]
    if strangers:
        raise ValidationFailed(f"delete: {strangers} are not in this group")
    if len(chosen) >= len(group.ids):
        raise ValidationFailed("delete: keep at least one photo of the group")
    for image_id in chosen:
        await images.delete_image(image_id=image_id, session_factory=session_factory,
                                  store=store, index=index)
    return chosen
