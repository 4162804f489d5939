"""Filling `images.taken_at` for photos stored before capture dates were read
(`capsearch doctor --backfill-taken`): each original is read back from the blob store and its
EXIF date parsed as an upload would (shared/capture.py).

Idempotent and resumable: only rows whose `taken_at` is null are read, a batch is committed
before the next is read, and an update never overwrites a date set meanwhile. Photos without a
usable date stay null (a second run reads them again, and finds nothing again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.capture import read_taken_at
from shared.db import ImageRecord
from shared.errors import NotFound
from shared.storage import BlobStore, original_key

log = logging.getLogger(__name__)

BATCH = 200


@dataclass
class BackfillReport:
    """How far a backfill got: `total` photos without a date when it started."""

    total: int = 0
    read: int = 0
    dated: int = 0  # filled from the file's EXIF
    undated: int = 0  # the file has no usable capture date: left null
    missing: int = 0  # the original is not in the blob store (`capsearch doctor` reports it)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def line(self) -> str:
        return (f"{self.read}/{self.total} read: {self.dated} dated, {self.undated} without a "
                f"capture date, {self.missing} originals missing")


def _undated(session: Session, after: int, limit: int) -> list[tuple[int, str]]:
    rows = session.execute(
        select(ImageRecord.id, ImageRecord.sha256)
        .where(ImageRecord.taken_at.is_(None), ImageRecord.id > after)
        .order_by(ImageRecord.id).limit(limit))
    return [(int(i), str(sha)) for i, sha in rows]


def backfill_taken(factory: sessionmaker[Session], store: BlobStore, *, batch: int = BATCH,
                   on_progress: Callable[[BackfillReport], None] | None = None
                   ) -> BackfillReport:
    """Read the capture date of every stored photo that has none; `on_progress` after each
    batch. A blob store that fails (not a missing blob) raises: what was committed stays."""
    report = BackfillReport()
    with factory() as session:
        report.total = session.scalar(select(func.count()).select_from(ImageRecord)
                                      .where(ImageRecord.taken_at.is_(None))) or 0
    after = 0
    while True:
        with factory() as session:
            rows = _undated(session, after, max(1, batch))
        if not rows:
            break
        found = {}
        for image_id, sha in rows:
            report.read += 1
            try:
                data = store.get(original_key(sha))
            except NotFound:
                report.missing += 1
                log.warning("image %d: original missing, capture date not read", image_id)
                continue
            taken = read_taken_at(data)
            if taken is None:
                report.undated += 1
            else:
                found[image_id] = taken
        with factory.begin() as session:
            for image_id, taken in found.items():
                # updated_at kept: a metadata fill is not a change the sweeper should see
                session.execute(update(ImageRecord)
                                .where(ImageRecord.id == image_id, ImageRecord.taken_at.is_(None))
                                .values(taken_at=taken, updated_at=ImageRecord.updated_at))
        report.dated += len(found)
        after = rows[-1][0]
        if on_progress is not None:
            on_progress(report)
    return report
