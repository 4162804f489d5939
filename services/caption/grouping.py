"""Near-duplicate groups of an ingest batch: into the duplicate index, nearest stored photos
as candidates, confirmed by cosine, recorded as pairs and merged groups.

Cost per photo at any collection size (no all-pairs pass, no regrouping): one add to and one
k-nearest query of the search service's duplicate index (an IVF over the `dup` vectors, ~3 ms
at 1M photos, docs/benchmarks.md "Near-duplicate grouping at scale"), k stored vectors read
back to confirm, and one transaction that inserts the pairs and moves the members of merged
groups (`shared/db/duplicates.py`). The batch is added before it asks, so two copies ingested
at the same moment by two workers still meet: the later of the two queries sees both.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from services.caption.captioners.backbone import (
    backbone_options,
    duplicate_vectors,
    shared_backbone,
)
from shared.clients import NeighbourIndex
from shared.config import Settings
from shared.db import EmbeddingKind
from shared.db.duplicates import record_pairs
from shared.db.queries import load_vectors
from shared.duplicates import matches, unit_rows

log = logging.getLogger(__name__)


def duplicate_pass(images: Sequence[Image.Image], settings: Settings) -> NDArray[np.float32]:
    """GeM vectors from a CNN pass of their own, for captioners that make none (`hf`)."""
    return duplicate_vectors(shared_backbone(**backbone_options(settings)).forward(images))


def group_duplicates(session_factory: sessionmaker[Session], index: NeighbourIndex,
                     image_ids: Sequence[int], vectors: NDArray[np.float32], *, model: str,
                     threshold: float, k: int) -> list[tuple[int, int, float]]:
    """Add the photos to the duplicate index, confirm each one's k nearest stored photos at
    cosine >= threshold, and record the pairs (their groups join or merge). Idempotent."""
    ids = [int(i) for i in image_ids]
    vectors = unit_rows(vectors)
    index.add(ids, vectors)
    candidates = {i: [h.image_id for h in index.search(v, k + 1).hits if h.image_id != i]
                  for i, v in zip(ids, vectors, strict=True)}
    own = dict(zip(ids, vectors, strict=True))
    others = {c for found in candidates.values() for c in found if c not in own}
    with session_factory() as session:
        # the stored vectors are the truth: a photo deleted since it was indexed has none
        stored = load_vectors(session, sorted(others), model=model, kind=EmbeddingKind.dup)
    known = {**stored, **own}
    pairs: list[tuple[int, int, float]] = []
    for image_id, found in candidates.items():
        kept = [c for c in found if c in known]
        if not kept:
            continue
        positions, scores = matches(own[image_id], np.stack([known[c] for c in kept]),
                                    threshold)
        pairs += [(image_id, kept[p], float(s))
                  for p, s in zip(positions.tolist(), scores.tolist(), strict=True)]
    if pairs:
        with session_factory.begin() as session:
            record_pairs(session, pairs)
        log.info("near-duplicates: %d pairs among %d new photos", len(pairs), len(ids))
    return pairs
