"""Thin synchronous shells over the async clients, for the caption worker and `capsearch doctor`.

The worker's pipeline is synchronous (Celery's solo pool; the CNN already runs on every core).
Rather than a second, synchronous implementation of each client, these shells run the async
clients' coroutines on one event loop per process, kept in a daemon thread: a daemon, so a
worker that never closes its clients still exits, and per process, so a forked worker child
starts its own loop instead of waiting on its parent's.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from shared.clients import EncoderClient, IndexClient
from shared.schemas import IndexChangeResponse, SearchResponse

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0
_loop_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    """This process's event loop for the shells, started on first use."""
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="blocking-clients",
                             daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def run_blocking(call: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the shells' event loop and wait for its result (or its error). It
    runs in a copy of the caller's context (asyncio schedules it from the calling thread), so
    the request id travels with the call."""
    return asyncio.run_coroutine_threadsafe(call, _background_loop()).result()


class BlockingEncoder:
    """A `SyncEncoder` over an async `EncoderClient`."""

    def __init__(self, client: EncoderClient) -> None:
        self.client = client

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return run_blocking(self.client.encode(list(texts)))

    def close(self) -> None:
        run_blocking(self.client.aclose())


class BlockingIndex:
    """An `IndexWriter` (and `NeighbourIndex`) over an async `IndexClient` (one search
    service, or every shard)."""

    def __init__(self, client: IndexClient) -> None:
        self.client = client

    def add(self, image_ids: Sequence[int], vectors: NDArray[np.float32]
            ) -> IndexChangeResponse:
        return run_blocking(self.client.add(list(image_ids), vectors))

    def remove(self, image_ids: Sequence[int]) -> IndexChangeResponse:
        return run_blocking(self.client.remove(list(image_ids)))

    def search(self, vector: NDArray[np.float32], k: int, nprobe: int | None = None
               ) -> SearchResponse:
        return run_blocking(self.client.search(vector, k, nprobe))

    def close(self) -> None:
        run_blocking(self.client.aclose())
