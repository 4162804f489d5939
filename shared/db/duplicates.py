"""Near-duplicate pairs and groups in the database: record an upload's confirmed pairs (its
group joins or merges others, no recomputation), and read groups a page at a time.

`duplicate_members.group_id` is the smallest image id a group has held; merging groups moves
the members of the others to the smallest id (one UPDATE). A deleted image takes its pairs and
membership with it (ON DELETE CASCADE), which can split a group: a page therefore re-forms each
group's connected parts from its remaining pairs (`shared.duplicates.DuplicateGroups`), so a
group whose link was deleted shows as its parts, and a lone photo as none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select, text, update
from sqlalchemy.orm import Session

from shared.db.models import DuplicateMember, DuplicatePair, ImageRecord
from shared.db.queries import chunked
from shared.duplicates import DuplicateGroup, DuplicateGroups

# the Postgres advisory lock every transaction that merges groups takes: two workers merging
# overlapping groups at once would otherwise each move members to a different group id
_MERGE_LOCK = 190_019


def record_pairs(session: Session, pairs: Sequence[tuple[int, int, float]]) -> int:
    """Store confirmed pairs (a < b or not) and merge the groups they join; idempotent.
    Returns how many groups the pairs form among themselves."""
    if not pairs:
        return 0
    if session.get_bind().dialect.name == "postgresql":  # SQLite: one writer at a time anyway
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MERGE_LOCK})
    norm = {(min(a, b), max(a, b)): float(s) for a, b, s in pairs if a != b}
    ids = sorted({i for pair in norm for i in pair})
    live = set(session.scalars(select(ImageRecord.id).where(ImageRecord.id.in_(ids))))
    norm = {k: s for k, s in norm.items() if k[0] in live and k[1] in live}
    existing = set(session.execute(
        select(DuplicatePair.image_a, DuplicatePair.image_b)
        .where(DuplicatePair.image_a.in_([a for a, _ in norm]))).tuples())
    fresh = [{"image_a": a, "image_b": b, "score": s} for (a, b), s in norm.items()
             if (a, b) not in existing]
    if fresh:
        session.execute(DuplicatePair.__table__.insert(), fresh)
    local = DuplicateGroups()
    local.add_all((a, b, s) for (a, b), s in norm.items())
    components = local.groups()
    for component in components:
        _merge(session, list(component.ids))
    return len(components)


def _merge(session: Session, members: list[int]) -> None:
    """Put these images, and every image of a group one of them is in, in one group."""
    groups = set(session.scalars(select(DuplicateMember.group_id)
                                 .where(DuplicateMember.image_id.in_(members))))
    target = min(groups | set(members))
    if groups - {target}:
        session.execute(update(DuplicateMember)
                        .where(DuplicateMember.group_id.in_(sorted(groups - {target})))
                        .values(group_id=target))
    known = set(session.scalars(select(DuplicateMember.image_id)
                                .where(DuplicateMember.image_id.in_(members))))
    if known:
        session.execute(update(DuplicateMember).where(DuplicateMember.image_id.in_(known))
                        .values(group_id=target))
    new = [{"image_id": i, "group_id": target} for i in members if i not in known]
    if new:
        session.execute(DuplicateMember.__table__.insert(), new)


def forget(session: Session, image_ids: Sequence[int]) -> None:
    """Drop images' pairs and memberships (the cascade does this on delete; for SQLite
    databases opened without foreign keys and for explicit calls)."""
    for chunk in chunked([int(i) for i in image_ids]):
        session.execute(delete(DuplicatePair).where(or_(DuplicatePair.image_a.in_(chunk),
                                                        DuplicatePair.image_b.in_(chunk))))
        session.execute(delete(DuplicateMember).where(DuplicateMember.image_id.in_(chunk)))


@dataclass(frozen=True)
class GroupPage:
    """Groups of one page, and the cursor of the next (None on the last page)."""

    groups: list[DuplicateGroup]
    next_after: int | None


def group_page(session: Session, *, after: int, limit: int) -> GroupPage:
    """Up to `limit` stored groups with an id above `after`, in group-id order, each as its
    connected parts of two or more photos (so a page may hold a few more or fewer groups
    than `limit`, after deletions)."""
    ids = list(session.scalars(
        select(DuplicateMember.group_id).where(DuplicateMember.group_id > after)
        .group_by(DuplicateMember.group_id).having(func.count() >= 2)
        .order_by(DuplicateMember.group_id).limit(limit + 1)))
    more = len(ids) > limit
    ids = ids[:limit]
    if not ids:
        return GroupPage([], None)
    members = session.execute(select(DuplicateMember.image_id, DuplicateMember.group_id)
                              .where(DuplicateMember.group_id.in_(ids))).tuples().all()
    image_ids = [i for i, _ in members]
    pairs = session.execute(select(DuplicatePair.image_a, DuplicatePair.image_b,
                                   DuplicatePair.score)
                            .where(DuplicatePair.image_a.in_(image_ids),
                                   DuplicatePair.image_b.in_(image_ids))).tuples().all()
    parts = DuplicateGroups()
    parts.add_all((int(a), int(b), float(s)) for a, b, s in pairs)
    found = parts.groups()
    group_of = dict(members)
    found.sort(key=lambda g: (group_of[g.ids[0]], g.ids[0]))
    return GroupPage(found, ids[-1] if more else None)


def group_of_image(session: Session, image_id: int) -> DuplicateGroup | None:
    """The connected part of its group that holds this image (None when it has no pair)."""
    group_id = session.scalar(select(DuplicateMember.group_id)
                              .where(DuplicateMember.image_id == image_id))
    if group_id is None:
        return None
    page = group_page(session, after=group_id - 1, limit=1)
    return next((g for g in page.groups if image_id in g.ids), None)
