"""Find similar: the images nearest to one image of the collection (that image first), or to
an uploaded photo.

An example is named by id, or uploaded; an uploaded example is looked up by its sha256 (its
content address) and, when the collection does not hold it, checked with the upload's caps
(format, bytes, pixels) and turned into a vector by the ingest models (`PhotoEncoder`: the
caption worker over the `similar` queue, or in-process in the embedded mode). Nothing of it
is stored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import anyio
import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.gateway.filters import ImageFilters
from services.gateway.search import ImageDetails, Ranked, as_result, load_details
from shared.clients import IndexClient
from shared.config import Settings
from shared.db import ImageRecord
from shared.db.queries import load_vectors
from shared.db.session import read_once_more
from shared.errors import Conflict, DependencyTimeout, DependencyUnavailable, NotFound
from shared.images import check_image
from shared.queue import PhotoEncoder
from shared.schemas import SimilarResults


class NotIndexed(Conflict):
    code = "not_indexed"


@dataclass(frozen=True)
class Example:
    image_id: int | None  # None: a photo outside the collection
    vector: NDArray[np.float32]


def example_by_id(session: Session, image_id: int, model: str) -> Example:
    """The stored caption vector of an image: 404 if there is no such image, 409 if it is not
    captioned yet."""
    status = session.scalar(select(ImageRecord.status).where(ImageRecord.id == image_id))
    if status is None:
        raise NotFound(f"image {image_id} not found")
    vector = load_vectors(session, [image_id], model=model).get(image_id)
    if vector is None:
        raise NotIndexed(f"image {image_id} is {status}, not indexed yet: find similar "
                         "images once it is indexed")
    return Example(image_id=image_id, vector=vector)


def example_by_bytes(session: Session, data: bytes, model: str) -> Example | None:
    """The collection's copy of these bytes (same sha256); None when it holds none."""
    sha = hashlib.sha256(data).hexdigest()
    image_id = session.scalar(select(ImageRecord.id).where(ImageRecord.sha256 == sha))
    if image_id is None:
        return None
    return example_by_id(session, int(image_id), model)


async def example_by_photo(data: bytes, *, settings: Settings, photos: PhotoEncoder | None
                           ) -> Example:
    """A photo outside the collection: checked as an upload is (4xx when it is not an image
    within the caps), then its vector from the ingest models (504 when they do not answer
    within `similar_timeout_s`)."""
    if photos is None:
        raise DependencyUnavailable("this gateway cannot embed photos (no caption worker)")
    await anyio.to_thread.run_sync(lambda: check_image(
        data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels))
    try:  # the Celery encoder times out by itself first; the in-process one only here
        with anyio.fail_after(settings.similar_timeout_s + 5):
            vector = await photos.embed_photo(data)
    except TimeoutError:
        raise DependencyTimeout(f"the photo was not embedded within "
                                f"{settings.similar_timeout_s:g} s") from None
    return Example(image_id=None, vector=vector)


async def find_similar(*, example: Example, k: int, min_score: float, nprobe: int | None,
                       index: IndexClient, session_factory: sessionmaker[Session]
                       ) -> SimilarResults:
    """The k nearest images to the example's vector, the example itself first (when it is a
    photo of the collection)."""
    found = await index.search(example.vector, k + 1, nprobe)
    ranked = [Ranked(h.image_id, h.score) for h in found.hits
              if h.image_id != example.image_id and h.score >= min_score]
    if example.image_id is not None:
        self_score = float(np.dot(example.vector, example.vector))
        ranked.insert(0, Ranked(example.image_id, self_score))
    ranked = ranked[:k]

    def _details() -> dict[int, ImageDetails]:
        return read_once_more(session_factory, lambda session: load_details(
            session, [hit.image_id for hit in ranked], ImageFilters()))

    details = await anyio.to_thread.run_sync(_details)
    results = [as_result(hit, details[hit.image_id]) for hit in ranked
               if hit.image_id in details]
    return SimilarResults(image_id=example.image_id, k=k, results=results,
                          index_version=found.index_version, partial=found.partial)
