"""A search, from a checked query to one page of results: a relevance threshold, filters, sort by
relevance, upload date or capture date, cursor paging and (optionally) hybrid ranking.

The vector index proposes candidates; the database filters them and supplies metadata. Hybrid
ranking fuses the vector ranking with a full-text ranking of caption text (Postgres full-text,
SQLite FTS5) by reciprocal rank fusion. Photos whose recognised text (OCR) holds every word of
the query are fused in the same way, by default (`ranking.ocr_weight`); their list leads.
Whatever the order, each result's `score` is the cosine similarity of the query and its
caption vector, so `min_score` means one thing.

Plain queries (relevance, no filters, no fusion) ask the index for exactly the rows the page
needs; filtered or date-sorted (upload or capture date) queries work on the best
`ranking.filter_depth` candidates.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

import anyio
import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.gateway.filters import ImageFilters
from services.gateway.images import content_url, thumbnail_url
from services.gateway.ranking import (
    decode_cursor,
    encode_cursor,
    newest_first,
    newest_taken_first,
    reciprocal_rank_fusion,
)
from shared.clients import EncoderClient, IndexClient
from shared.config import Settings
from shared.db import ImageRecord
from shared.db.fulltext import match_captions, match_photo_text
from shared.db.models import aware
from shared.db.queries import chunked, latest_caption, load_vectors
from shared.db.session import read_once_more
from shared.errors import ValidationFailed
from shared.schemas import SearchHit, SearchResult, SearchResults

Sort = Literal["relevance", "date", "taken"]  # date: upload time; taken: capture time
DEFAULT_K = 10
MAX_INDEX_K = 1000  # what one search-service call returns at most (SearchRequest.k)


@dataclass(frozen=True)
class SearchQuery:
    """A checked search: the text, how many and how good, how ordered, narrowed and paged."""

    q: str
    k: int
    min_score: float = -1.0
    nprobe: int | None = None
    sort: Sort = "relevance"
    filters: ImageFilters = ImageFilters()
    hybrid: bool = False
    cursor: str | None = None

    def fingerprint(self) -> str:
        """What a cursor is bound to: the same text, threshold, order and filters."""
        key = repr((self.q, self.min_score, self.nprobe, self.sort, self.hybrid,
                    self.filters.fingerprint()))
        return hashlib.sha256(key.encode()).hexdigest()[:12]


def check_k(k: int | None, max_k: int) -> int:
    """How many results: `DEFAULT_K` when not given, else within 1..max_k (the setting)."""
    k = min(DEFAULT_K, max_k) if k is None else k
    if not 1 <= k <= max_k:
        raise ValidationFailed(f"k: must be between 1 and {max_k}")
    return k


def check_query(*, settings: Settings, q: str, k: int | None, min_score: float = -1.0,
                nprobe: int | None = None, sort: Sort = "relevance",
                filters: ImageFilters = ImageFilters(), hybrid: bool = False,
                cursor: str | None = None) -> SearchQuery:
    """A `SearchQuery`, after what the static constraints of a request cannot check: the
    text without control characters, and the caps the settings set."""
    # control characters (NUL, BEL, ...) are dropped; a query of nothing visible is empty
    text = "".join(ch for ch in q if unicodedata.category(ch) != "Cc" or ch.isspace()).strip()
    if not any(unicodedata.category(ch) not in ("Cc", "Cf", "Zs", "Zl", "Zp") for ch in text):
        raise ValidationFailed("q: the query is empty")
    if len(text) > settings.query_max_chars:
        raise ValidationFailed(
            f"q: the query has {len(text)} characters; the limit is {settings.query_max_chars}")
    k = check_k(k, settings.search_max_k)
    if not -1.0 <= min_score <= 1.0:
        raise ValidationFailed("min_score: must be between -1 and 1")
    if nprobe is not None and nprobe < 1:
        raise ValidationFailed("nprobe: must be at least 1")
    return SearchQuery(q=text, k=k, min_score=min_score, nprobe=nprobe, sort=sort,
                       filters=filters, hybrid=hybrid, cursor=cursor)


# ---- what the database says about candidates ---------------------------------------------------


@dataclass(frozen=True)
class ImageDetails:
    """What a result shows of an image besides its id and score."""

    filename: str
    source: str
    created_at: datetime
    taken_at: datetime | None
    width: int
    height: int
    size_bytes: int
    caption: str | None


def load_details(session: Session, image_ids: Sequence[int], filters: ImageFilters
                 ) -> dict[int, ImageDetails]:
    """Metadata and latest caption of the images that exist and pass the filters: one
    statement (one round trip) per 900 ids, the caption as a correlated subquery."""
    rows: list[Any] = []
    caption = latest_caption().label("caption")
    for chunk in chunked(list(dict.fromkeys(image_ids))):
        rows += session.execute(
            select(ImageRecord.id, ImageRecord.filename, ImageRecord.source,
                   ImageRecord.created_at, ImageRecord.taken_at, ImageRecord.width,
                   ImageRecord.height,
                   ImageRecord.size_bytes, caption)
            .where(ImageRecord.id.in_(chunk), *filters.clauses())).all()
    return {r.id: ImageDetails(filename=r.filename, source=r.source,
                               created_at=aware(r.created_at),
                               taken_at=aware(r.taken_at) if r.taken_at else None,
                               width=r.width, height=r.height,
                               size_bytes=r.size_bytes, caption=r.caption)
            for r in rows}


class Ranked(NamedTuple):
    """A result in its final place: the image and its cosine score."""

    image_id: int
    score: float


def as_result(hit: Ranked, d: ImageDetails) -> SearchResult:
    return SearchResult(id=hit.image_id, score=hit.score, caption=d.caption,
                        filename=d.filename, content_url=content_url(hit.image_id),
                        thumbnail_url=thumbnail_url(hit.image_id), source=d.source,
                        created_at=d.created_at, taken_at=d.taken_at, width=d.width,
                        height=d.height,
                        size_bytes=d.size_bytes)


@dataclass(frozen=True)
class Candidates:
    """What the database says about the candidates of one query."""

    details: dict[int, ImageDetails]
    text_ranking: list[int]
    text_scores: dict[int, float]  # cosine scores of text matches the vector list lacked
    photo_text_ranking: list[int] = field(default_factory=list)  # OCR matches, best first


def _gather(session_factory: sessionmaker[Session], *, query: SearchQuery,
            vector_ids: list[int], query_vector: NDArray[np.float32], text_depth: int,
            model: str, photo_text_ranking: list[int] | None = None) -> Candidates:
    photo_ranking = photo_text_ranking or []

    def read(session: Session) -> Candidates:
        text_ranking = match_captions(session, query.q, text_depth) if query.hybrid else []
        known = set(vector_ids)
        text_only = [i for i in dict.fromkeys(photo_ranking + text_ranking) if i not in known]
        vectors = load_vectors(session, text_only, model=model) if text_only else {}
        text_scores = {i: float(np.dot(query_vector, v)) for i, v in vectors.items()
                       if v.shape == query_vector.shape}
        details = load_details(session, vector_ids + list(text_scores), query.filters)
        return Candidates(details=details, text_ranking=text_ranking, text_scores=text_scores,
                          photo_text_ranking=photo_ranking)

    return read_once_more(session_factory, read)


async def _encode_and_match_photo_text(*, query: SearchQuery, settings: Settings,
                                       encoder: EncoderClient,
                                       session_factory: sessionmaker[Session]
                                       ) -> tuple[NDArray[np.float32], list[int]]:
    """The query's vector and, at the same time, the photos whose text holds its words (a
    thread and an indexed lookup that mostly finds nothing: no added wait on the encoder)."""
    if settings.ranking.ocr_weight <= 0:
        return (await encoder.encode([query.q]))[0], []
    found: dict[str, Any] = {}

    def match(session: Session) -> list[int]:
        return match_photo_text(session, query.q, settings.ranking.depth)

    async def lookup() -> None:
        try:
            found["ids"] = await anyio.to_thread.run_sync(
                lambda: read_once_more(session_factory, match))
        except Exception as exc:  # raised below, outside the task group (no ExceptionGroup)
            found["error"] = exc

    async with anyio.create_task_group() as group:
        group.start_soon(lookup)
        try:
            found["vectors"] = await encoder.encode([query.q])
        except Exception as exc:
            found["encode_error"] = exc
    for key in ("encode_error", "error"):
        if key in found:
            raise found[key]
    return found["vectors"][0], found["ids"]


# ---- ranking and paging ------------------------------------------------------------------------


def _depths(query: SearchQuery, offset: int, settings: Settings, *, fused: bool = False
            ) -> tuple[int, bool]:
    """How many vector candidates to ask for, and whether that is exactly the page (plain).
    `fused`: photo-text matches join the ranking (as deep as hybrid)."""
    wanted = offset + query.k
    plain = (query.sort == "relevance" and not query.filters.active and not query.hybrid
             and not fused)
    if plain:
        depth = wanted
    elif query.filters.active or query.sort != "relevance":
        depth = max(wanted, settings.ranking.filter_depth)
    else:
        depth = max(wanted, settings.ranking.depth)
    if wanted > MAX_INDEX_K:
        raise ValidationFailed(f"cursor: pages end after the best {MAX_INDEX_K} results; "
                               "narrow the query or add filters")
    return min(depth, MAX_INDEX_K), plain


def order_candidates(*, hits: list[SearchHit], candidates: Candidates, query: SearchQuery,
                     settings: Settings) -> list[Ranked]:
    """Every candidate that passed the filters and min_score, in final order."""
    scores = {h.image_id: h.score for h in hits} | candidates.text_scores
    keep = {i for i, s in scores.items()
            if i in candidates.details and s >= query.min_score}
    if query.sort == "date":
        created = {i: candidates.details[i].created_at for i in keep}
        order = newest_first(list(keep), created)
    elif query.sort == "taken":
        details = candidates.details
        order = newest_taken_first(list(keep), {i: details[i].taken_at for i in keep},
                                   {i: details[i].created_at for i in keep})
    elif query.hybrid or candidates.photo_text_ranking:
        vector_ranking = [h.image_id for h in hits]
        # the photo-text list leads: ties (a photo only it found, against the top vector hit)
        # go to the photo holding every word of the query
        fused = reciprocal_rank_fusion(
            [candidates.photo_text_ranking, vector_ranking, candidates.text_ranking],
            [settings.ranking.ocr_weight, 1.0, settings.ranking.text_weight],
            k=settings.ranking.rrf_k)
        order = [i for i in fused if i in keep]
    else:
        order = [h.image_id for h in hits if h.image_id in keep]
    return [Ranked(i, scores[i]) for i in order]


async def search_page(*, query: SearchQuery, settings: Settings, encoder: EncoderClient,
                      index: IndexClient, session_factory: sessionmaker[Session]
                      ) -> SearchResults:
    """One page of results for the query and its cursor."""
    fingerprint = query.fingerprint()
    offset = decode_cursor(query.cursor, fingerprint) if query.cursor else 0
    vector, photo_text_ranking = await _encode_and_match_photo_text(
        query=query, settings=settings, encoder=encoder, session_factory=session_factory)
    depth, plain = _depths(query, offset, settings, fused=bool(photo_text_ranking))
    found = await index.search(vector, depth, query.nprobe)
    candidates = await anyio.to_thread.run_sync(lambda: _gather(
        session_factory, query=query, vector_ids=[h.image_id for h in found.hits],
        query_vector=vector, text_depth=settings.ranking.depth,
        model=settings.embedding_model, photo_text_ranking=photo_text_ranking))
    ranked = order_candidates(hits=found.hits, candidates=candidates, query=query,
                              settings=settings)
    page = ranked[offset:offset + query.k]
    more = len(ranked) > offset + query.k
    if plain and len(found.hits) == depth and len(ranked) == len(found.hits):
        more = True  # the index may hold more than it was asked for
    next_offset = offset + query.k
    next_cursor = (encode_cursor(next_offset, fingerprint)
                   if more and next_offset < MAX_INDEX_K else None)
    return SearchResults(
        query=query.q, k=query.k,
        results=[as_result(hit, candidates.details[hit.image_id]) for hit in page],
        index_version=found.index_version, partial=found.partial, sort=query.sort,
        hybrid=query.hybrid, next_cursor=next_cursor)
