"""Where the benches find their datasets: the settings' `datasets_dir`, a relative one taken
from the repository's root rather than from wherever the bench is run."""

from __future__ import annotations

from pathlib import Path

from shared.config import Settings

REPO = Path(__file__).resolve().parent.parent


def datasets_dir(settings: Settings) -> Path:
    """The datasets folder the settings name (CAPSEARCH_DATASETS_DIR), made absolute."""
    return settings.datasets_dir if settings.datasets_dir.is_absolute() else (
        REPO / settings.datasets_dir)
