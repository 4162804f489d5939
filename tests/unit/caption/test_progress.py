"""Long offline jobs show progress also when their output goes to a log, not a terminal."""

from __future__ import annotations

import subprocess
import sys


def test_a_job_logging_to_a_file_still_shows_its_progress() -> None:
    code = ("from services.caption.training.progress import progress_bar\n"
            "for _ in progress_bar(range(3), desc='features'): pass\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)  # stderr is a pipe here, as under nohup or CI
    assert "features: 100%" in done.stderr and "3/3" in done.stderr
