"""Queries first on a shared CPU: background work (the caption worker) runs at a lower OS
priority, a higher nice value, so a query's passes get a core as soon as they are ready.

On Linux the nice value belongs to a thread, and a thread starts with the value of the thread
that creates it: a worker thread that lowers its own priority first also lowers every pool
thread it starts later (the CNN's streams, preprocessing, an ONNX Runtime pool made by its
first batch), whatever runtime runs inside, while the server's threads stay at 0. Elsewhere
the call would lower the whole process, so a thread is left as it is there.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

MAX_NICE = 19


def thread_nice() -> int | None:
    """The calling thread's nice value (Linux), None where threads have none of their own."""
    if not sys.platform.startswith("linux"):
        return None
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def lower_thread_priority(nice: int) -> int | None:
    """Raise the calling thread's nice value to at least `nice` (0 = leave it); the value in
    force afterwards, or None where the OS gives threads no priority of their own."""
    current = thread_nice()
    if current is None or nice <= 0:
        return current
    target = min(MAX_NICE, nice)
    if current < target:
        try:  # lowering one's own priority needs no privilege
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), target)
        except OSError as exc:
            log.warning("could not lower the priority of %s: %s",
                        threading.current_thread().name, exc)
    return thread_nice()


def lower_process_priority(nice: int) -> int:
    """Raise the whole process's nice value to at least `nice` (a worker process of its own,
    before it starts threads); the value in force afterwards."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > 0 and current < min(MAX_NICE, nice):
        os.nice(min(MAX_NICE, nice) - current)
    return os.getpriority(os.PRIO_PROCESS, 0)
