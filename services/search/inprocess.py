"""The search service inside the caller's process (embedded mode): the `IndexClient` contract
over an `IndexService`, each blocking call in a worker thread so the event loop never blocks."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import numpy as np
from numpy.typing import NDArray

from services.search.service import IndexService, remove_from_collection
from shared.schemas import IndexChangeResponse, IndexStats, RebuildStatus, SearchResponse


class InProcessIndexClient:
    """`IndexClient` over an in-process `IndexService` (which the embedded stack owns), and the
    near-duplicate index beside it (None: duplicates off), which removals reach too."""

    def __init__(self, service: IndexService, duplicates: IndexService | None = None) -> None:
        self.service = service
        self.duplicates = duplicates

    async def add(self, image_ids: Sequence[int], vectors: NDArray[np.float32]
                  ) -> IndexChangeResponse:
        return await anyio.to_thread.run_sync(self.service.add, list(image_ids), vectors)

    async def remove(self, image_ids: Sequence[int]) -> IndexChangeResponse:
        return await anyio.to_thread.run_sync(remove_from_collection, self.service,
                                              self.duplicates, list(image_ids))

    async def search(self, vector: NDArray[np.float32], k: int, nprobe: int | None = None
                     ) -> SearchResponse:
        return await anyio.to_thread.run_sync(self.service.search, vector, k, nprobe)

    async def start_rebuild(self) -> RebuildStatus:
        return await anyio.to_thread.run_sync(self.service.start_rebuild)

    async def rebuild_status(self) -> RebuildStatus:
        return self.service.rebuild_status()  # a copy of in-memory state: no thread needed

    async def stats(self) -> IndexStats:
        return await anyio.to_thread.run_sync(self.service.stats)

    async def aclose(self) -> None:
        return None  # the embedded stack owns the service
