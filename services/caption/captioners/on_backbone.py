"""Captioners that read the shared EfficientNet-Lite0 pass, and image embedders beside them.

One CNN pass over a batch feeds the caption (`describe_output`) and, when the worker also stores an
image-side vector, the embedder (`embed_output`) — the CNN is the costly part of both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from services.caption.captioners.backbone import BackboneOutput, EfficientNetBackbone
from services.caption.captioners.base import Captioner


class ImageEmbedder(Protocol):
    """Maps a CNN pass to unit vectors in the text encoder's space (one row per image)."""

    backbone: EfficientNetBackbone

    def load(self) -> None: ...

    def embed_output(self, out: BackboneOutput) -> NDArray[np.float32]: ...

    def embed(self, images: Sequence[Image.Image]) -> NDArray[np.float32]: ...


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
                 ) -> tuple[list[str], NDArray[np.float32] | None]:
        if embedder is None or embedder.backbone is not self.backbone:
            return super()._analyse(batch, embedder)
        out = self.backbone.forward(batch)  # the one pass both read
        return self.describe_output(out), embedder.embed_output(out)
