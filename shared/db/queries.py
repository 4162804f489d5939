"""Queries more than one service runs, defined once: the latest caption of an image, the
stored vectors of images, and `IN (...)` lists cut to a size every backend takes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import ColumnElement, ScalarSelect, select
from sqlalchemy.orm import Session

from shared.db.models import Caption, Embedding, EmbeddingKind, ImageRecord
from shared.vectors import from_bytes

T = TypeVar("T")

# ids per `IN (...)` list: well under SQLite's bound-parameter limit
IN_CHUNK = 900


def chunked(values: Sequence[T], size: int = IN_CHUNK) -> Iterator[list[T]]:
    """`values` in consecutive lists of at most `size` (for `IN` lists and bulk statements)."""
    for start in range(0, len(values), size):
        yield list(values[start:start + size])


def latest_caption() -> ScalarSelect[str]:
    """The most recently written caption of the `images` row it is selected beside (a
    correlated subquery; ties on the time go to the later row)."""
    return (select(Caption.text).where(Caption.image_id == ImageRecord.id)
            .order_by(Caption.created_at.desc(), Caption.id.desc()).limit(1)
            .correlate(ImageRecord).scalar_subquery())


def vectors_of(model: str, kind: EmbeddingKind = EmbeddingKind.caption
               ) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """The `embeddings` rows of one kind written by one encoder model (a WHERE clause)."""
    return Embedding.kind == kind.value, Embedding.model == model


def load_vectors(session: Session, image_ids: Sequence[int], *, model: str,
                 kind: EmbeddingKind = EmbeddingKind.caption) -> dict[int, NDArray[np.float32]]:
    """The stored vectors of these images (those that have one), by image id."""
    out: dict[int, NDArray[np.float32]] = {}
    for chunk in chunked(list(dict.fromkeys(int(i) for i in image_ids))):
        rows = session.execute(select(Embedding.image_id, Embedding.dim, Embedding.vector)
                               .where(Embedding.image_id.in_(chunk), *vectors_of(model, kind)))
        out.update({int(i): from_bytes(vector, dim) for i, dim, vector in rows})
    return out
