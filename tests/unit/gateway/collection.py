"""Seeding a gateway's database with images, captions and caption vectors (no blobs)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from shared.db import Caption, Embedding, ImageRecord
from shared.vectors import to_bytes
from tests.unit.gateway.conftest import DIM, Gateway


@dataclass(frozen=True)
class Photo:
    name: str
    caption: str | None = None
    vector: tuple[float, ...] | None = None  # stored as the caption vector (DIM floats)
    created: datetime = datetime(2024, 1, 1, tzinfo=UTC)
    taken: datetime | None = None  # the EXIF capture date; None: the file has none
    source: str = "upload"
    width: int = 640
    height: int = 480
    size_bytes: int = 100_000
    status: str = "indexed"


def unit(*values: float) -> tuple[float, ...]:
    v = np.asarray(values + (0.0,) * (DIM - len(values)), dtype=np.float32)
    return tuple(float(x) for x in v / np.linalg.norm(v))


def seed(gateway: Gateway, photos: list[Photo]) -> dict[str, int]:
    """Rows for the photos; name -> id."""
    ids = {}
    with gateway.session_factory.begin() as session:
        for n, p in enumerate(photos):
            row = ImageRecord(sha256=f"{n + 1:064x}", filename=p.name, source=p.source,
                              format="JPEG", width=p.width, height=p.height,
                              size_bytes=p.size_bytes, status=p.status, created_at=p.created,
                              taken_at=p.taken)
            session.add(row)
            session.flush()
            ids[p.name] = row.id
            if p.caption is not None:
                session.add(Caption(image_id=row.id, text=p.caption, model="tags"))
            if p.vector is not None:
                session.add(Embedding(image_id=row.id, kind="caption",
                                      model=gateway.settings.embedding_model, dim=DIM,
                                      vector=to_bytes(np.asarray(p.vector, np.float32))))
    return ids
