"""The default trained models shipped with the package (built by `capsearch build-models`)."""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent


def default_model_path(name: str) -> Path:
    """Where the shipped model file `name` lives (it may not be built yet)."""
    return MODELS_DIR / name
