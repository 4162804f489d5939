"""Captioners that read the shared EfficientNet-Lite0 pass.

One CNN pass over a batch feeds the caption (`describe_output`) and, when the worker also stores an
image-side vector, the embedder (`embed_output`, `captioners/embedder.py`) — the CNN is the
costly part of both.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from services.caption.captioners.backbone import (
    BackboneOutput,
    EfficientNetBackbone,
    duplicate_vectors,
)
from services.caption.captioners.base import Captioner
from services.caption.captioners.embedder import ImageEmbedder, ImageEmbedding


class BackboneCaptioner(Captioner):
    """A captioner whose captions come from one `EfficientNetBackbone` pass."""

    backbone: EfficientNetBackbone

    def describe_output(self, out: BackboneOutput) -> list[str]:
        """Captions from a CNN pass the caller already made."""
        raise NotImplementedError

    def _load(self) -> None:
        self.backbone.load()

    def _caption(self, batch: list[Image.Image]) -> list[str]:
        return self.describe_output(self.backbone.forward(batch))

    def _analyse(self, batch: list[Image.Image], embedder: ImageEmbedder | None
                 ) -> tuple[list[str], ImageEmbedding | None, NDArray[np.float32] | None]:
        out = self.backbone.forward(batch)  # the one pass the caption, image and GeM read
        if embedder is None:
            image = None
        elif embedder.backbone is self.backbone:
            image = embedder.embed_output(out)
        else:
            image = embedder.embed(batch)
        return self.describe_output(out), image, duplicate_vectors(out)
