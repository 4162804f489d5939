"""The captioner registry: built by name from settings."""

from __future__ import annotations

import pytest

from services.caption.captioners import (
    Captioner,
    available_captioners,
    build_captioner,
    register_captioner,
)
from services.caption.captioners.tags import TagsCaptioner
from shared.config import Settings


def test_tags_is_built_from_settings() -> None:
    captioner = build_captioner("tags", Settings(caption_batch_size=3, device="cpu"))
    assert isinstance(captioner, TagsCaptioner)
    assert (captioner.name, captioner.batch_size) == ("tags", 3)
    assert captioner.version


def test_an_unknown_name_is_refused_with_the_available_ones() -> None:
    with pytest.raises(ValueError, match="unknown captioner 'nope'.*tags"):
        build_captioner("nope", Settings())


def test_a_name_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match="already registered"):
        @register_captioner("tags")
        class Impostor(Captioner):
            pass


def test_tags_is_available() -> None:
    assert "tags" in available_captioners()
