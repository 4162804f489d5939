"""The image embedder contract: what maps a CNN pass into the text encoder's space, beside the
captioners that read the same pass (`services/caption/projection.py` implements it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from services.caption.captioners.backbone import BackboneOutput, EfficientNetBackbone


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
