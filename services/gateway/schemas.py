"""Public response models that only the gateway speaks (the rest live in shared.schemas)."""

from __future__ import annotations

from shared.schemas import ImagePage

__all__ = ["ImagePage"]  # defined in shared.schemas: the Python client speaks it too
