"""Captioners that read the shared EfficientNet-Lite0 pass, and image embedders beside them.

One CNN pass over a batch feeds the caption (`describe_output`) and, when the worker also stores an
image-side vector, the embedder (`embed_output`) — the CNN is the costly part of both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from services.caption.captioners.backbone import BackboneOutput, EfficientNetBackbone
from services.caption.captioners.base import Captioner


@dataclass(frozen=True)
class ImageEmbedding:
    """Image-side vectors of a batch (B, D) in the text encoder's space, and the texts the
    fused vector adds (one per image, e.g. tag captions; empty when it adds none)."""

    vectors: NDArray[np.float32]
    texts: list[str]


class ImageEmbedder(Protocol):
    """Maps a CNN pass into the text encoder's space and says what the index serves."""

    backbone: EfficientNetBackbone

    def load(self) -> None: ...

    def embed_output(self, out: BackboneOutput) -> ImageEmbedding: ...

    def embed(self, images: Sequence[Image.Image]) -> ImageEmbedding: ...

    def serve(self, representation: str, text_vectors: NDArray[np.float32],
              image_vectors: NDArray[np.float32],
              text_weight: float | None = None) -> NDArray[np.float32]: ...


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
                 ) -> tuple[list[str], ImageEmbedding | None]:
        if embedder is None or embedder.backbone is not self.backbone:
            return super()._analyse(batch, embedder)
        out = self.backbone.forward(batch)  # the one pass both read
        return self.describe_output(out), embedder.embed_output(out)
