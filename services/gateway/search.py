"""Search: validate the query, encode it, ask the index, hydrate the hits from the database."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.clients import EncoderClient, IndexClient
from shared.config import Settings
from shared.db import Caption, ImageRecord
from shared.errors import ValidationFailed
from shared.schemas import SearchResult, SearchResults

DEFAULT_K = 10


@dataclass(frozen=True)
class SearchQuery:
    """A validated search request."""

    q: str
    k: int
    min_score: float = -1.0
    nprobe: int | None = None


def validate_search_query(*, settings: Settings, q: str, k: int | None, min_score: float,
                          nprobe: int | None) -> SearchQuery:
    """Check what the static query constraints cannot: stripped text and setting-bound caps."""
    # control characters (NUL, BEL, ...) are dropped; a query of nothing visible is empty
    text = "".join(ch for ch in q if unicodedata.category(ch) != "Cc" or ch.isspace()).strip()
    if not any(unicodedata.category(ch) not in ("Cc", "Cf", "Zs", "Zl", "Zp") for ch in text):
        raise ValidationFailed("q: the query is empty")
    if len(text) > settings.query_max_chars:
        raise ValidationFailed(
            f"q: the query has {len(text)} characters; the limit is {settings.query_max_chars}")
    k = min(DEFAULT_K, settings.search_max_k) if k is None else k
    if not 1 <= k <= settings.search_max_k:
        raise ValidationFailed(f"k: must be between 1 and {settings.search_max_k}")
    if not -1.0 <= min_score <= 1.0:
        raise ValidationFailed("min_score: must be between -1 and 1")
    if nprobe is not None and nprobe < 1:
        raise ValidationFailed("nprobe: must be at least 1")
    return SearchQuery(q=text, k=k, min_score=min_score, nprobe=nprobe)


@dataclass(frozen=True)
class HitDetails:
    filename: str
    caption: str | None


def hydrate_hits(session: Session, image_ids: Sequence[int]) -> dict[int, HitDetails]:
    """Filenames and latest captions of the images that still exist, in one query."""
    if not image_ids:
        return {}
    stmt = (
        select(ImageRecord.id, ImageRecord.filename, Caption.text)
        .outerjoin(Caption, Caption.image_id == ImageRecord.id)
        .where(ImageRecord.id.in_(list(image_ids)))
        .order_by(ImageRecord.id, Caption.created_at, Caption.id)
    )
    details: dict[int, HitDetails] = {}
    for image_id, filename, caption in session.execute(stmt):
        # rows come oldest caption first, so the last one written per image wins
        if image_id not in details or caption is not None:
            details[image_id] = HitDetails(filename=filename, caption=caption)
    return details


def _hydrate(session_factory: sessionmaker[Session], image_ids: list[int]
             ) -> dict[int, HitDetails]:
    with session_factory() as session:
        return hydrate_hits(session, image_ids)


async def search_images(*, query: SearchQuery, encoder: EncoderClient,
                        index: IndexClient, session_factory: sessionmaker[Session]
                        ) -> SearchResults:
    """Encode the text, search the index, keep hits above min_score, hydrate in rank order."""
    vectors = await encoder.encode([query.q])
    found = await index.search(vectors[0], query.k, query.nprobe)
    hits = [h for h in found.hits if h.score >= query.min_score]
    details = await anyio.to_thread.run_sync(_hydrate, session_factory,
                                             [h.image_id for h in hits])
    results = [
        SearchResult(
            id=h.image_id,
            score=h.score,
            caption=details[h.image_id].caption,
            filename=details[h.image_id].filename,
            content_url=f"/v1/images/{h.image_id}/content",
            thumbnail_url=f"/v1/images/{h.image_id}/thumbnail",
        )
        for h in hits
        if h.image_id in details  # deleted since it was indexed
    ]
    return SearchResults(query=query.q, k=query.k, results=results,
                         index_version=found.index_version, partial=found.partial,
                         failed_shards=found.failed_shards)
