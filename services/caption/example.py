"""A query by a photo outside the collection: its served vector from the ingest models,
nothing stored.

The same stages as ingest (`pipeline.decode_images` → `pipeline.analyse_images`: the
captioner's CNN pass, the caption's text vector, the projection head and the representation
the index serves), so the vector lives where the collection's do. The caption worker runs it
for the stack (task `capsearch.embed_photo`, queue `similar`), the embedded mode in-process.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
from numpy.typing import NDArray

from services.caption.pipeline import PipelineDeps, analyse_images, decode_images
from shared.errors import ValidationFailed
from shared.images import check_image

log = logging.getLogger(__name__)


def embed_photo(data: bytes, deps: PipelineDeps) -> NDArray[np.float32]:
    """The vector the index would serve for this photo (1-D); 422 when it does not decode or
    is over the pixel and byte caps of an upload."""
    start = time.perf_counter()
    settings = deps.settings
    check_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
    images, failures = decode_images({0: data})
    if failures:
        raise ValidationFailed(f"file: {failures[0]}")
    # a query needs no duplicate vector: skip that work (and its index)
    query_deps = dataclasses.replace(deps, duplicates=None)
    analysed = analyse_images([images[0]], query_deps)
    log.info("photo embedded for a query in %.0f ms", (time.perf_counter() - start) * 1000)
    return np.asarray(analysed.vectors[0], dtype=np.float32)
