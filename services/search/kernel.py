"""The compiled single-query probe and scan (`_scan.c`), or None where it was not built.

`pip install` builds the C extension (any C compiler will do; setuptools drives it). Without
it the index takes its numpy paths, which give the same answers about half as fast at 200k
vectors (bench/search_bench.py). `CAPSEARCH_NO_NATIVE=1` forces the numpy paths.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

log = logging.getLogger(__name__)


def _load() -> ModuleType | None:
    if os.environ.get("CAPSEARCH_NO_NATIVE", "").strip() not in ("", "0"):
        return None
    try:
        from services.search import _scan
    except ImportError:  # pragma: no cover - depends on the build
        log.info("services.search._scan is not built: the index scans with numpy")
        return None
    return _scan


native: ModuleType | None = _load()
