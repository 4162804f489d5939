"""The projection head: CNN features of a photo → a vector in the text encoder's space.

Queries are caption-like sentences embedded by the text encoder (MiniLM-L6, 384-d). A photo's
caption gives one vector in that space; the head gives a second one straight from the pixels:
v = normalise(W · GeM(features) + b), a ridge regression from the generalised-mean-pooled
EfficientNet-Lite0 features onto the mean text vector of each training photo's human
captions (`capsearch train-projection`). The search index serves the normalised weighted sum
of the caption's vector and v (`fused`), so the query path is unchanged. The text weight is
tuned with the head, per captioner, and stored in the same file (docs/quality.md).

One file (`services/caption/models/projection.pt` by default): weight (float16), bias, the
CNN input size and pooling the head was trained on, the tuned text weights and provenance.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from services.caption.captioners.backbone import (
    BackboneOutput,
    EfficientNetBackbone,
    shared_backbone,
)
from services.caption.models import default_model_path
from shared.config import Settings
from shared.vectors import l2_normalize

log = logging.getLogger(__name__)

FORMAT = "capsearch-projection/1"
DEFAULT_PROJECTION = "projection.pt"
DEFAULT_TEXT_WEIGHT = 0.35


@dataclass
class ProjectionHead:
    """A linear map from pooled CNN features (F) to the text space (D)."""

    weight: NDArray[np.float32]  # (F, D)
    bias: NDArray[np.float32]  # (D,)
    image_size: int
    gem_p: float = 3.0
    text_weights: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def project(self, pooled: NDArray[np.floating]) -> NDArray[np.float32]:
        """Pooled features (N, F) → unit vectors (N, D)."""
        return l2_normalize(np.asarray(pooled, np.float32) @ self.weight + self.bias)

    def text_weight(self, captioner: str) -> float:
        """The caption vector's weight in the fused vector, as tuned for this captioner."""
        return float(self.text_weights.get(captioner,
                                           self.text_weights.get("*", DEFAULT_TEXT_WEIGHT)))


def fit_ridge(features: NDArray[np.floating], targets: NDArray[np.floating], alpha: float
              ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Closed-form ridge with an unpenalised intercept: (W, b) minimising
    ‖X W + b − Y‖² + alpha ‖W‖² (float64 normal equations; F is small)."""
    x = np.asarray(features, np.float64)
    y = np.asarray(targets, np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc = x - x_mean
    gram = xc.T @ xc
    gram[np.diag_indices_from(gram)] += alpha
    weight = np.linalg.solve(gram, xc.T @ (y - y_mean))
    bias = y_mean - x_mean @ weight
    return weight.astype(np.float32), bias.astype(np.float32)


def save_head(path: Path, head: ProjectionHead) -> None:
    """Write atomically; the weight is stored as float16."""
    payload = {
        "format": FORMAT,
        "weight": torch.from_numpy(head.weight).to(torch.float16),
        "bias": torch.from_numpy(head.bias.astype(np.float32)),
        "image_size": int(head.image_size),
        "gem_p": float(head.gem_p),
        "text_weights": {k: float(v) for k, v in head.text_weights.items()},
        "meta": dict(head.meta),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_head(path: Path) -> ProjectionHead:
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file")
    return ProjectionHead(weight=payload["weight"].float().numpy(),
                          bias=payload["bias"].float().numpy(),
                          image_size=int(payload["image_size"]), gem_p=float(payload["gem_p"]),
                          text_weights=dict(payload.get("text_weights", {})),
                          meta=dict(payload.get("meta", {})))


class ImageProjection:
    """The head over the shared CNN pass: an `ImageEmbedder` for the caption worker."""

    def __init__(self, path: Path | str | None = None, *,
                 backbone: EfficientNetBackbone | None = None, device: str = "auto",
                 image_size: int = 288) -> None:
        self.path = Path(path) if path is not None else default_model_path(DEFAULT_PROJECTION)
        self.backbone = backbone if backbone is not None else shared_backbone(device, image_size)
        self.head: ProjectionHead | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageProjection:
        return cls(settings.projection_checkpoint, device=settings.device,
                   image_size=settings.backbone_image_size)

    def load(self) -> None:
        with self._lock:
            if self.head is not None:
                return
            if not self.path.is_file():
                raise FileNotFoundError(f"no projection head at {self.path}; build the default "
                                        "models with `capsearch build-models`")
            head = load_head(self.path)
            if head.image_size != self.backbone.image_size:
                raise ValueError(f"{self.path} was trained on {head.image_size} px CNN input; "
                                 f"the backbone runs at {self.backbone.image_size} px "
                                 "(CAPSEARCH_BACKBONE_IMAGE_SIZE)")
            self.backbone.load()
            self.head = head
        log.info("projection head %s loaded (%s)", self.path, head.meta.get("trained_on", "?"))

    def text_weight(self, captioner: str) -> float:
        self.load()
        assert self.head is not None
        return self.head.text_weight(captioner)

    def embed_output(self, out: BackboneOutput) -> NDArray[np.float32]:
        """Unit vectors in the text space from a CNN pass the caller already made."""
        self.load()
        assert self.head is not None
        return self.head.project(out.gem(self.head.gem_p).cpu().numpy())

    def embed(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        """Unit vectors in the text space (one CNN pass of this head's backbone)."""
        return self.embed_output(self.backbone.forward(images))
