"""The `tags` captioner: ImageNet labels written as a caption."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.caption.captioners.backbone import imagenet_labels
from services.caption.captioners.tags import TagsCaptioner, join_nouns
from shared.images import decode_rgb

GOLDEN_RETRIEVER, TENNIS_BALL, MAILLOT, MAILLOT_2 = 207, 852, 638, 639


def logits_for(probs: dict[int, float]) -> torch.Tensor:
    """Logits whose softmax puts (about) these probabilities on these classes."""
    p = torch.full((1000,), 1e-9)
    for index, prob in probs.items():
        p[index] = prob
    return torch.log(p / p.sum()).unsqueeze(0)


@pytest.fixture(scope="module")
def rule() -> TagsCaptioner:
    """Only `describe` is used here, so no weights are loaded."""
    return TagsCaptioner(top_k=5, min_prob=0.02)


def test_confident_label_alone_makes_the_caption(rule: TagsCaptioner) -> None:
    caption = rule.describe(logits_for({TENNIS_BALL: 0.99}))[0]
    assert caption == "a photo of a tennis ball"


def test_labels_above_the_floor_are_listed_with_their_kind(rule: TagsCaptioner) -> None:
    caption = rule.describe(logits_for({GOLDEN_RETRIEVER: 0.6, TENNIS_BALL: 0.3, 1: 0.01}))[0]
    assert caption == "a photo of a dog: a golden retriever and a tennis ball"


def test_duplicate_label_names_are_written_once(rule: TagsCaptioner) -> None:
    assert imagenet_labels()[MAILLOT] == imagenet_labels()[MAILLOT_2]
    caption = rule.describe(logits_for({MAILLOT: 0.5, MAILLOT_2: 0.5}))[0]
    assert caption == "a photo of a maillot"


def test_first_label_is_kept_even_below_the_floor(rule: TagsCaptioner) -> None:
    caption = rule.describe(torch.zeros(1, 1000))[0]  # uniform: every class at 0.001
    assert caption.startswith("a photo of a") and caption.count(",") == 0


def test_nouns_are_joined_with_articles() -> None:
    assert join_nouns(["apple", "dog", "ice bear"]) == "an apple, a dog and an ice bear"


@pytest.mark.slow
def test_photos_get_sensible_non_empty_captions(tags_captioner: TagsCaptioner,
                                                coco_images: list[Path]) -> None:
    images = [decode_rgb(path.read_bytes()) for path in coco_images[:5]]
    captions = tags_captioner.caption(images)  # batch_size 4: two batches
    assert len(captions) == 5
    for caption in captions:
        assert caption.startswith("a photo of ")
        assert "_" not in caption
        assert len(caption) > len("a photo of a ")
    assert captions == [tags_captioner.caption([image])[0] for image in images]


def test_captioning_nothing_gives_nothing(tags_captioner: TagsCaptioner) -> None:
    assert tags_captioner.caption([]) == []
