"""One base for every model the services run: the text encoder, the CNN backbone, the captioners
and the projection head. Load lazily, once, under a lock; run; close.

Template method, as Immich's `models/base.py`: `load()` calls the subclass's `_load()` the first
time only, whichever thread gets there first (the others wait for it); every run method of a
subclass starts with `self.load()`, so first use loads. `close()` calls `_close()` to free the
weights and threads, and the next use loads again. Loading stays apart from running, so a test
can build a tiny model and inject it.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class InferenceModel:
    """Base of every model class: `load()` → `_load()` once, `close()` → `_close()`."""

    def __init__(self) -> None:
        self._loaded = False
        # held while loading or closing; subclasses may also guard their own state with it
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        """Load the weights once (thread-safe; later calls return at once)."""
        with self._lock:
            if self._loaded:
                return
            start = time.perf_counter()
            self._load()
            self._loaded = True
        log.info("%s loaded in %.2f s", self, time.perf_counter() - start)

    def close(self) -> None:
        """Free the weights and threads; a later use loads again."""
        with self._lock:
            if self._loaded:
                self._close()
                self._loaded = False

    def __str__(self) -> str:
        """What the log lines call this model (subclasses name it better)."""
        return type(self).__name__

    def _load(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Drop what `_load` made (nothing by default)."""
