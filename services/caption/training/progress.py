"""Progress bars of the long offline jobs (feature extraction, training, evaluation).

tqdm on stderr, also when stderr is not a terminal (`nohup … > log`, CI, a Kubernetes Job):
there a line every 30 seconds instead of a redrawn bar, so a log shows how far a job is
without filling up.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress_bar(iterable: Iterable[T] | None = None, **options: Any) -> tqdm[T]:
    """`tqdm(iterable, **options)` with the output rules above."""
    terminal = sys.stderr.isatty()
    return tqdm(iterable, file=sys.stderr, mininterval=0.1 if terminal else 30.0,
                **options)
