"""The search service holds vectors, not models: it must not import torch (seconds of start-up
and hundreds of MB per replica, against the memory goal of docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys


def test_the_search_service_does_not_import_torch() -> None:
    code = ("import sys, services.search.app, services.search.__main__; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
