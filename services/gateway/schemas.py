"""Public response models that only the gateway speaks (the rest live in shared.schemas)."""

from __future__ import annotations

from pydantic import BaseModel

from shared.schemas import ImagePublic


class ImagePage(BaseModel):
    """One page of `GET /v1/images`, newest first; `next_offset` is None on the last page."""

    images: list[ImagePublic]
    total: int
    limit: int
    offset: int
    next_offset: int | None = None
