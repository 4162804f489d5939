"""Lowering a worker process's priority (the Celery caption worker does it at start)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="threads have a nice value of their own on Linux")

PROBE = """
import threading
from shared.scheduling import lower_process_priority, thread_nice
print(lower_process_priority(7), end=" ")
seen = []
t = threading.Thread(target=lambda: seen.append(thread_nice()))
t.start(); t.join()
print(seen[0], end=" ")
print(lower_process_priority(3))  # never back up
"""


def test_a_worker_process_and_the_threads_it_starts_run_at_its_nice_value() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out == ["7", "7", "7"]
