"""Duplicate vectors for photos indexed before near-duplicates existed (or while they were
off): read each original, one CNN pass, store the `dup` vector, group it as ingest does.

`capsearch duplicates --backfill` runs it; it is idempotent (only photos without a duplicate
vector of the current CNN are read) and resumable (each batch is stored before the next).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from services.caption.grouping import duplicate_pass, group_duplicates
from services.caption.pipeline import WorkItem, decode_images, read_originals, upsert_rows
from shared.clients import NeighbourIndex
from shared.config import Settings
from shared.db import Embedding, EmbeddingKind, ImageRecord, ImageStatus
from shared.db.queries import chunked, vectors_of
from shared.duplicates import duplicate_vector_model
from shared.storage import BlobStore
from shared.vectors import to_bytes

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class BackfillReport:
    """Photos given a duplicate vector, those that could not be read, and the pairs found."""

    done: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    pairs: int = 0


def photos_without_vectors(session_factory: sessionmaker[Session], model: str) -> list[WorkItem]:
    """Indexed photos with no duplicate vector of this CNN, oldest first."""
    has_one = exists().where(Embedding.image_id == ImageRecord.id,
                             *vectors_of(model, EmbeddingKind.dup))
    with session_factory() as session:
        rows = session.execute(select(ImageRecord.id, ImageRecord.sha256)
                               .where(ImageRecord.status == ImageStatus.indexed.value,
                                      ~has_one).order_by(ImageRecord.id)).all()
    return [WorkItem(int(i), sha) for i, sha in rows]


def backfill_duplicates(*, settings: Settings, session_factory: sessionmaker[Session],
                        store: BlobStore, index: NeighbourIndex, batch_size: int = 32,
                        progress: Progress | None = None) -> BackfillReport:
    """Give every indexed photo without one a duplicate vector, and its group."""
    model = duplicate_vector_model(settings)
    todo = photos_without_vectors(session_factory, model)
    report = BackfillReport()
    for batch in chunked(todo, batch_size):
        blobs, missing = read_originals(store, batch)
        images, bad = decode_images(blobs)
        report.failed.update(missing | bad)
        if images:
            ids = list(images)
            vectors = duplicate_pass([images[i] for i in ids], settings)
            with session_factory.begin() as session:
                upsert_rows(session, Embedding, ["image_id", "kind", "model"], [
                    {"image_id": i, "kind": EmbeddingKind.dup.value, "model": model,
                     "dim": int(v.shape[0]), "vector": to_bytes(v)}
                    for i, v in zip(ids, vectors, strict=True)])
            report.pairs += len(group_duplicates(
                session_factory, index, ids, vectors, model=model,
                threshold=settings.duplicate_threshold, k=settings.duplicate_neighbours))
            report.done += len(ids)
        if progress is not None:
            progress(report.done + len(report.failed), len(todo))
    for image_id, reason in report.failed.items():
        log.warning("image %d has no duplicate vector: %s", image_id, reason)
    return report
