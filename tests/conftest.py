"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def datasets_dir() -> Path:
    """The read-only photo collections (CAPSEARCH_DATASETS_DIR, default ../shared/data)."""
    env = os.environ.get("CAPSEARCH_DATASETS_DIR")
    return Path(env) if env else (REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = datasets_dir()
    if not root.is_dir():
        pytest.skip(f"datasets folder {root} not present")
    return root
