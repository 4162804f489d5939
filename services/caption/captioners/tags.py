"""`tags`: the ImageNet classifier's top labels written as a caption; needs no training.

The caption is embedded by the text encoder and compared with queries such as "a dog runs
through the grass", so it reads like one: "a photo of a dog: a golden retriever, a tennis ball
and a lawn". Rule (chosen by retrieval recall on coco-mini-val and flickr8k-dev, where more
labels beat fewer: the right object is often the 2nd-5th guess): the top `top_k` labels whose
probability is at least `min_prob` (the first label always), de-duplicated, preceded by the
coarse kind ("dog", "bird", ...) of the fine-grained animal classes ImageNet splits so finely.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from services.caption.captioners.backbone import (
    CROP_SIZE,
    BackboneOutput,
    EfficientNetBackbone,
    backbone_options,
    imagenet_labels,
    shared_backbone,
)
from services.caption.captioners.base import register_captioner
from services.caption.captioners.on_backbone import BackboneCaptioner
from shared.config import Settings

# ImageNet class index ranges (inclusive) → the everyday word people use in queries
COARSE_KINDS: tuple[tuple[int, int, str], ...] = (
    (0, 6, "fish"), (7, 24, "bird"), (25, 32, "frog"), (33, 37, "turtle"),
    (38, 48, "lizard"), (49, 50, "crocodile"), (52, 68, "snake"), (70, 78, "spider"),
    (80, 100, "bird"), (127, 146, "bird"), (151, 268, "dog"), (281, 285, "cat"),
    (286, 293, "big cat"), (294, 297, "bear"), (300, 319, "insect"), (321, 326, "butterfly"),
    (330, 332, "rabbit"), (365, 382, "monkey"), (385, 386, "elephant"), (389, 397, "fish"),
)


def coarse_kind(class_index: int) -> str | None:
    for first, last, kind in COARSE_KINDS:
        if first <= class_index <= last:
            return kind
    return None


def with_article(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def join_nouns(nouns: Sequence[str]) -> str:
    """["x", "y", "z"] → "a x, a y and a z"."""
    phrases = [with_article(n) for n in nouns]
    if len(phrases) <= 1:
        return "".join(phrases)
    return f"{', '.join(phrases[:-1])} and {phrases[-1]}"


@register_captioner("tags")
class TagsCaptioner(BackboneCaptioner):
    """Captions from the EfficientNet-Lite ImageNet labels (one CNN pass per batch)."""

    def __init__(self, *, batch_size: int = 16, top_k: int = 5, min_prob: float = 0.02,
                 backbone: EfficientNetBackbone | None = None,
                 **options: Any) -> None:
        super().__init__(batch_size=batch_size)
        self.top_k = top_k
        self.min_prob = min_prob
        self.backbone = (backbone if backbone is not None
                         else shared_backbone(**options))
        cnn = self.backbone
        size = "" if cnn.image_size == CROP_SIZE else f"-{cnn.image_size}px"
        squash = "-squash" if cnn.resize == "squash" else ""
        self.version = f"{cnn.name}{size}{squash}/top{top_k}-p{min_prob:g}/v1"

    @classmethod
    def from_settings(cls, settings: Settings) -> TagsCaptioner:
        return cls(batch_size=settings.caption_batch_size, **backbone_options(settings))

    def _load(self) -> None:
        self.backbone.load()
        imagenet_labels()

    def describe_output(self, out: BackboneOutput) -> list[str]:
        return self.describe(out.logits)

    def describe(self, logits: torch.Tensor) -> list[str]:
        """Captions from ImageNet logits (B, 1000), so a caller with a CNN pass can reuse it."""
        probs, indices = torch.softmax(logits.float(), dim=1).topk(self.top_k, dim=1)
        return [self._sentence(p, i) for p, i in zip(probs.tolist(), indices.tolist(),
                                                     strict=True)]

    def _sentence(self, probs: list[float], indices: list[int]) -> str:
        labels = imagenet_labels()
        nouns: list[str] = []
        kinds: list[str] = []
        for rank, (prob, index) in enumerate(zip(probs, indices, strict=True)):
            if rank > 0 and prob < self.min_prob:
                break
            if labels[index] not in nouns:
                nouns.append(labels[index])
            kind = coarse_kind(index)
            if kind is not None and kind not in kinds:
                kinds.append(kind)
        head = f"a photo of {join_nouns(kinds)}: " if kinds else "a photo of "
        return head + join_nouns(nouns)
