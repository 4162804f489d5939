"""The projection head: a photo's CNN features → vectors in the text encoder's space.

Queries are caption-like sentences embedded by the text encoder (MiniLM-L6, 384-d). The head
maps the shared CNN pass into that space, so the index can serve a vector that is better than
any caption's (docs/quality.md):

- image vector  r = normalise(W₂·relu(W₁·x + b₁) + b₂): a two-layer MLP from x = [GeM-pooled
  head features, ½·mean-pooled last-block features] (1,600-d), trained contrastively against
  the training photos' human captions (`training/train_projection.py`; the input
  standardisation is folded into W₁). A head of format /1 is one linear map (no W₁).
- fused vector  v = normalise(w·t + (1-w)·r), t = the text vector of the photo's ImageNet tag
  caption (the `tags` rule on the same pass's logits: zero-shot knowledge of 1,000 classes),
  optionally v ← normalise(M·v) with a learned metric M (format /1 heads), then a hubness
  correction: v minus β times its mean similarity to its k nearest training captions along the
  mean caption direction (an approximation of CSLS that keeps a plain cosine index).

Everything after the head is linear in the query, so the query path is unchanged. One file
holds it all (`services/caption/models/projection.pt` by default; float16 matrices).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from services.caption.captioners.backbone import (
    BackboneOutput,
    EfficientNetBackbone,
    backbone_options,
    shared_backbone,
)
from services.caption.captioners.embedder import ImageEmbedding
from services.caption.captioners.tags import TagsCaptioner
from services.caption.models import default_model_path
from shared.config import Settings
from shared.inference import InferenceModel
from shared.vectors import l2_normalize

FORMAT = "capsearch-projection/2"
FORMATS = ("capsearch-projection/1", FORMAT)  # /1: one linear layer, no hidden one
DEFAULT_PROJECTION = "projection.pt"
GEM_P = 3.0
HEAD_INPUT_DIM = 1280 + 320
BOTTLENECK_SCALE = 0.5  # the last block's features are ~3× larger: keep the ridge balanced
Matrix = NDArray[np.float32]


def head_input(out: BackboneOutput, gem_p: float = GEM_P) -> torch.Tensor:
    """The head's input (B, 1,600): GeM of the head features ++ ½·mean of the last block's."""
    parts = [out.gem(gem_p)]
    if out.bottleneck is None:
        raise ValueError("the projection head needs the backbone's bottleneck features")
    parts.append(BOTTLENECK_SCALE * out.bottleneck.float().mean(dim=(2, 3)))
    return torch.cat(parts, dim=1).cpu()


@dataclass
class ProjectionHead:
    """Image map, fusion, metric and hubness correction (see the module docstring)."""

    weight: Matrix  # (H, D), or (F, D) without a hidden layer
    bias: Matrix  # (D,)
    image_size: int
    hidden_weight: Matrix | None = None  # (F, H)
    hidden_bias: Matrix | None = None  # (H,)
    text_weight: float = 0.35
    metric: Matrix | None = None  # (D, D)
    bank: Matrix | None = None  # (K, D) training caption vectors
    hub_beta: float = 0.0
    hub_k: int = 10
    gem_p: float = GEM_P
    meta: dict[str, Any] = field(default_factory=dict)

    def project(self, x: NDArray[np.floating]) -> Matrix:
        """Head inputs (N, F) → image vectors (N, D), unit length."""
        h = np.asarray(x, np.float32)
        if self.hidden_weight is not None:
            h = np.maximum(h @ self.hidden_weight + self.hidden_bias, 0.0)
        return l2_normalize(h @ self.weight + self.bias)

    def fuse(self, text_vectors: Matrix, image_vectors: Matrix,
             text_weight: float | None = None) -> Matrix:
        """The served `fused` vectors from tag-caption text vectors and image vectors."""
        w = self.text_weight if text_weight is None else text_weight
        v = l2_normalize(w * l2_normalize(text_vectors) + (1.0 - w) * l2_normalize(image_vectors))
        if self.metric is not None:
            v = l2_normalize(v @ self.metric.T)
        return self.correct_hubness(v)

    def correct_hubness(self, v: Matrix) -> Matrix:
        """v − β·(mean of its k best cosines with the training captions)·(mean direction)."""
        if self.bank is None or self.hub_beta <= 0:
            return v
        sims = v @ self.bank.T
        k = min(self.hub_k, sims.shape[1])
        best = np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:]  # the k best, any order
        crowd = best.mean(axis=1, keepdims=True)
        return l2_normalize(v - self.hub_beta * crowd * self._bank_direction)

    @cached_property
    def _bank_direction(self) -> Matrix:
        """The training captions' mean direction (fixed once the head is built)."""
        assert self.bank is not None
        return l2_normalize(self.bank.mean(axis=0))


def save_head(path: Path, head: ProjectionHead) -> None:
    """Write atomically; matrices as float16."""
    def half(m: Matrix | None) -> torch.Tensor | None:
        return None if m is None else torch.from_numpy(np.asarray(m, np.float32)).half()

    payload = {
        "format": FORMAT, "weight": half(head.weight),
        "bias": torch.from_numpy(np.asarray(head.bias, np.float32)),
        "hidden_weight": half(head.hidden_weight),
        "hidden_bias": (None if head.hidden_bias is None
                        else torch.from_numpy(np.asarray(head.hidden_bias, np.float32))),
        "metric": half(head.metric), "bank": half(head.bank),
        "image_size": int(head.image_size), "text_weight": float(head.text_weight),
        "hub_beta": float(head.hub_beta), "hub_k": int(head.hub_k),
        "gem_p": float(head.gem_p), "meta": dict(head.meta),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_head(path: Path) -> ProjectionHead:
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") not in FORMATS:
        raise ValueError(f"{path} is not a projection head ({', '.join(FORMATS)})")

    def full(t: torch.Tensor | None) -> Matrix | None:
        return None if t is None else t.float().numpy()

    weight, bias = full(payload["weight"]), full(payload["bias"])
    assert weight is not None and bias is not None
    return ProjectionHead(weight=weight, bias=bias, metric=full(payload.get("metric")),
                          hidden_weight=full(payload.get("hidden_weight")),
                          hidden_bias=full(payload.get("hidden_bias")),
                          bank=full(payload.get("bank")),
                          image_size=int(payload["image_size"]),
                          text_weight=float(payload["text_weight"]),
                          hub_beta=float(payload.get("hub_beta", 0.0)),
                          hub_k=int(payload.get("hub_k", 10)),
                          gem_p=float(payload.get("gem_p", GEM_P)),
                          meta=dict(payload.get("meta", {})))


class ImageProjection(InferenceModel):
    """The head over the shared CNN pass: the caption worker's `ImageEmbedder`."""

    def __init__(self, path: Path | str | None = None, *,
                 backbone: EfficientNetBackbone | None = None,
                 **options: Any) -> None:
        super().__init__()
        self.path = Path(path) if path is not None else default_model_path(DEFAULT_PROJECTION)
        options.setdefault("image_size", 288)
        self.backbone = (backbone if backbone is not None
                         else shared_backbone(**options))
        self.tags = TagsCaptioner(backbone=self.backbone)  # the fusion text's rule
        self.head: ProjectionHead | None = None

    def __str__(self) -> str:
        trained_on = self.head.meta.get("trained_on", "?") if self.head is not None else "?"
        return f"projection head {self.path} (trained on {trained_on})"

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageProjection:
        return cls(settings.projection_checkpoint, **backbone_options(settings))

    def _load(self) -> None:
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

    def _close(self) -> None:
        self.head = None

    def embed_output(self, out: BackboneOutput) -> ImageEmbedding:
        """Image vectors and tag captions from a CNN pass the caller already made."""
        self.load()
        assert self.head is not None
        vectors = self.head.project(head_input(out, self.head.gem_p).numpy())
        return ImageEmbedding(vectors, self.tags.describe(out.logits))

    def embed(self, images: Sequence[Image.Image]) -> ImageEmbedding:
        """Image vectors and tag captions (one CNN pass of this head's backbone)."""
        return self.embed_output(self.backbone.forward(images))

    def serve(self, representation: str, text_vectors: Matrix, image_vectors: Matrix,
              text_weight: float | None = None) -> Matrix:
        """What the index serves for `image` or `fused` (text vectors of the tag captions)."""
        self.load()
        assert self.head is not None
        if representation == "image":
            return l2_normalize(image_vectors)
        if representation == "fused":
            return self.head.fuse(text_vectors, image_vectors, text_weight)
        raise ValueError(f"the projection head serves `image` or `fused`, not {representation!r}")


def build_embedder(settings: Settings) -> ImageProjection | None:
    """The embedder the representation needs (None for `caption`)."""
    if settings.representation == "caption":
        return None
    return ImageProjection.from_settings(settings)
