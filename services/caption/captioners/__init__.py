"""Captioners behind one interface, built by name (`settings.captioner`)."""

from services.caption.captioners import hf, sat, tags  # noqa: F401  (register by name)
from services.caption.captioners.base import (
    Analysis,
    Captioner,
    available_captioners,
    build_captioner,
    register_captioner,
)

__all__ = ["Analysis", "Captioner", "available_captioners", "build_captioner",
           "register_captioner"]
