"""Micro-batching of concurrent encode requests: one forward pass serves many callers.

Requests that arrive within a short window (or until `max_batch` texts are waiting) are
concatenated, encoded in ONE call on the inference thread, and split back per caller. With
concurrent single-query requests this turns N forward passes into one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

EncodeFn = Callable[[Sequence[str]], NDArray[np.float32]]


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future[NDArray[np.float32]] = field(repr=False)


class MicroBatcher:
    """Collects concurrent `encode` calls into batches run on one executor thread."""

    def __init__(self, encode: EncodeFn, executor: Executor, *, max_batch: int = 64,
                 wait_ms: float = 2.0) -> None:
        self._encode = encode
        self._executor = executor
        self._max_batch = max(1, max_batch)
        self._wait_s = max(0.0, wait_ms) / 1000.0
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # how many forward calls were made (for tests and metrics)

    @property
    def waiting(self) -> int:
        """Callers queued for a batch that has not started yet."""
        return self._queue.qsize()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.cancel()

    async def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Encode `texts` (possibly together with other callers' texts)."""
        self.start()
        future: asyncio.Future[NDArray[np.float32]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(list(texts), future))
        return await future

    async def _collect(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        size = len(batch[0].texts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        while size < self._max_batch:
            timeout = deadline - loop.time()
            try:
                item = self._queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(
                    self._queue.get(), timeout)
            except (asyncio.QueueEmpty, TimeoutError):
                break
            batch.append(item)
            size += len(item.texts)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [p for p in batch if not p.future.done()]  # a caller may have gone away
            if not live:
                continue
            texts = [t for p in live for t in p.texts]
            try:
                vectors = await loop.run_in_executor(self._executor, self._encode, texts)
            except Exception as exc:  # every caller of this batch gets the same error
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self.batches += 1
            start = 0
            for p in live:
                end = start + len(p.texts)
                if not p.future.done():
                    p.future.set_result(vectors[start:end])
                start = end
