"""Captioners behind one interface, built by name (`settings.captioner`)."""

from services.caption.captioners import tags  # noqa: F401  (registers "tags")
from services.caption.captioners.base import (
    Captioner,
    available_captioners,
    build_captioner,
    register_captioner,
)

__all__ = ["Captioner", "available_captioners", "build_captioner", "register_captioner"]
