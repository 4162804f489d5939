"""Find similar: the images nearest to one image of the collection, that image first.

An example is named by id, or uploaded; an uploaded example is looked up by its sha256 (its
content address). The gateway has no captioner, so an example the collection does not hold is
refused with a 404 that says to upload it first (`POST /v1/images`): captioning synchronously
would tie a search request to the slowest model, on a process that has no GPU.
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
from shared.db import ImageRecord
from shared.db.queries import load_vectors
from shared.db.session import read_once_more
from shared.errors import Conflict, NotFound
from shared.schemas import SimilarResults


class NotIndexed(Conflict):
    code = "not_indexed"


@dataclass(frozen=True)
class Example:
    image_id: int
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


def example_by_bytes(session: Session, data: bytes, model: str) -> Example:
    """The collection's copy of these bytes (same sha256), or 404 saying to upload first."""
    sha = hashlib.sha256(data).hexdigest()
    image_id = session.scalar(select(ImageRecord.id).where(ImageRecord.sha256 == sha))
    if image_id is None:
        raise NotFound("this photo is not in the collection: upload it (POST /v1/images) "
                       "and find similar images by its id once it is indexed",
                       code="not_in_collection")
    return example_by_id(session, int(image_id), model)


async def find_similar(*, example: Example, k: int, min_score: float, nprobe: int | None,
                       index: IndexClient, session_factory: sessionmaker[Session]
                       ) -> SimilarResults:
    """The k nearest images to the example's caption vector, the example itself first."""
    found = await index.search(example.vector, k + 1, nprobe)
    self_score = float(np.dot(example.vector, example.vector))
    ranked = [Ranked(example.image_id, self_score)] + [
        Ranked(h.image_id, h.score) for h in found.hits
        if h.image_id != example.image_id and h.score >= min_score]
    ranked = ranked[:k]

    def _details() -> dict[int, ImageDetails]:
        return read_once_more(session_factory, lambda session: load_details(
            session, [hit.image_id for hit in ranked], ImageFilters()))

    details = await anyio.to_thread.run_sync(_details)
    results = [as_result(hit, details[hit.image_id]) for hit in ranked
               if hit.image_id in details]
    return SimilarResults(image_id=example.image_id, k=k, results=results,
                          index_version=found.index_version, partial=found.partial)
