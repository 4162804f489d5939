"""Following what other replicas of a shard index (`IndexService.follow`).

Replicas of one shard behind one Service each receive a share of the adds; the database has
them all (`embeddings`). Every poll reads the vectors written after the newest one this replica
has (less `FOLLOW_SLACK`, so late commits are not lost): newer ones are added (a re-captioned
photo's vector replaces its old one; this replica's own adds come back once, harmlessly), older
ones only if absent here. Removals need no following: the gateway drops hits whose image is
gone, and the next load or rebuild forgets them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

from services.search.index import ExactIndex, unit_rows
from services.search.serving import Serving, Shards, add_owned
from services.search.store import WrittenVector
from shared.vectors import from_bytes

# `follow` re-reads this far behind the newest write it saw: a transaction that stamped its
# rows earlier but committed later is still picked up
FOLLOW_SLACK = timedelta(seconds=10)
# vectors `follow` reads per poll at most
FOLLOW_BATCH = 10_000


def follow_from(mark: datetime, *, full: bool = False) -> datetime:
    """Where the next `follow` reads from: `FOLLOW_SLACK` behind the newest write seen, but no
    further back than `FOLLOW_SLACK` before now (older rows have long committed: an idle
    collection is not re-read every poll); after a full batch, its end (or it could loop)."""
    if full:
        return mark
    now = datetime.now(UTC)
    if mark.tzinfo is None:  # SQLite hands datetimes back naive (UTC)
        now = now.replace(tzinfo=None)
    return max(mark - FOLLOW_SLACK, min(mark, now - FOLLOW_SLACK))


def take_in(serving: Serving, rows: Sequence[WrittenVector], mark: datetime | None,
            shards: Shards) -> tuple[Serving, int]:
    """Add the rows the serving index lacks (see the module docstring); `mark` is the newest
    write it already has. Returns the serving state (a new one when there was no index yet)
    and how many vectors were taken in. The caller holds the write lock."""
    index = serving.index
    dim = index.dim if index is not None else rows[-1].dim
    usable = [r for r in rows if r.dim == dim]  # (the load warned about other dims)
    fresh = [r for r in usable if mark is None or r.written_at > mark]
    fresh_ids = {r.image_id for r in fresh}
    older = [r for r in usable if r.image_id not in fresh_ids]
    if older and index is not None:  # late commits: only those not here yet
        present = index.lists_of(np.array([r.image_id for r in older], dtype=np.int64))
        older = [r for r, where in zip(older, present.tolist(), strict=True) if where < 0]
    todo = list({r.image_id: r for r in older + fresh}.values())  # the latest row per id
    if not todo:
        return serving, 0
    ids = np.array([r.image_id for r in todo], dtype=np.int64)
    mat = unit_rows(np.stack([from_bytes(r.vector, dim) for r in todo]), dim)
    if index is None:
        index = ExactIndex(dim)
        serving = Serving(index, serving.version_id)
    if serving.version_id is not None and not index.exact:
        lists = index.assign(mat)
        add_owned(index, ids, mat, lists, shards.owned(lists))
    else:
        add_owned(index, ids, mat, None, shards.owned(ids))
    return serving, len(todo)
