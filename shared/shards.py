"""Search shards behind one `IndexClient`: fan a query out, merge the top-k, survive a dead shard.

Shard i of n owns the clusters c with c % n == i (exact mode: image ids), so a query goes to
every shard and the global top-k is the top-k of the shards' top-k lists. Writes go to every
shard too: each keeps what it owns (the caption worker need not know the clusters), and a write
only succeeds when every shard took it (the worker's task retries; adds are idempotent). The
gateway uses this client as it is, the synchronous worker through `shared.blocking.BlockingIndex`.

A search shard that fails or answers later than `search_shard_timeout_s` leaves the others'
answer, marked `partial` with its number in `failed_shards`, or, with
`search_on_shard_failure = "error"`, a 503/504; never a hang and never a 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from shared.clients import HttpIndexClient, IndexClient, service_token
from shared.config import Settings
from shared.errors import CapsearchError, DependencyError, DependencyTimeout, DependencyUnavailable
from shared.schemas import (
    IndexChangeResponse,
    IndexStats,
    RebuildStatus,
    SearchHit,
    SearchResponse,
)

log = logging.getLogger(__name__)

OnFailure = Literal["partial", "error"]


def merge_search(answers: Sequence[SearchResponse], k: int, failed: Sequence[int] = ()
                 ) -> SearchResponse:
    """The top-k of the shards' answers (best score first, ties by id; an id once)."""
    best: dict[int, float] = {}
    for answer in answers:
        for hit in answer.hits:
            if hit.score > best.get(hit.image_id, -np.inf):
                best[hit.image_id] = hit.score
    ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k]
    versions = [a.index_version for a in answers]
    return SearchResponse(
        hits=[SearchHit(image_id=i, score=s) for i, s in ranked],
        index_version=versions[0] if versions else None,
        exact=all(a.exact for a in answers),
        partial=bool(failed) or any(a.partial for a in answers),
        failed_shards=sorted({*failed, *(f for a in answers for f in a.failed_shards)}))


def _as_dependency_error(shard: int, exc: BaseException) -> CapsearchError:
    if isinstance(exc, CapsearchError):
        return exc
    if isinstance(exc, TimeoutError):
        return DependencyTimeout(f"search shard {shard} timed out")
    return DependencyError(f"search shard {shard} failed: {type(exc).__name__}: {exc}")


class ShardedIndexClient:
    """One `IndexClient` over the shards' clients (shard i at position i)."""

    def __init__(self, shards: Sequence[IndexClient], *, timeout_s: float,
                 on_failure: OnFailure = "partial") -> None:
        if not shards:
            raise ValueError("at least one search shard is needed")
        self.shards = list(shards)
        self.timeout_s = timeout_s
        self.on_failure = on_failure

    async def search(self, vector: NDArray[np.float32], k: int, nprobe: int | None = None
                     ) -> SearchResponse:
        async def one(shard: IndexClient) -> SearchResponse:
            return await asyncio.wait_for(shard.search(vector, k, nprobe), self.timeout_s)

        results = await asyncio.gather(*(one(s) for s in self.shards), return_exceptions=True)
        answers = [r for r in results if isinstance(r, SearchResponse)]
        errors = {i: _as_dependency_error(i, r) for i, r in enumerate(results)
                  if not isinstance(r, SearchResponse)}
        for i, exc in errors.items():
            log.warning("search shard %d: %s", i, exc)
        if errors and (not answers or self.on_failure == "error"):
            if all(isinstance(e, DependencyTimeout) for e in errors.values()):
                raise DependencyTimeout(f"search shards {sorted(errors)} timed out")
            first = next(iter(errors.values()))
            if not isinstance(first, DependencyError):  # e.g. a 422 every shard agrees on
                raise first
            raise DependencyUnavailable(f"search shards {sorted(errors)} failed: {first}")
        return merge_search(answers, k, sorted(errors))

    async def _everywhere(self, calls: list[Awaitable[IndexChangeResponse]]
                          ) -> list[IndexChangeResponse]:
        results = await asyncio.gather(*calls, return_exceptions=True)
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                raise _as_dependency_error(i, r)
        return [r for r in results if isinstance(r, IndexChangeResponse)]

    async def add(self, image_ids: Sequence[int], vectors: NDArray[np.float32]
                  ) -> IndexChangeResponse:
        done = await self._everywhere([s.add(image_ids, vectors) for s in self.shards])
        return IndexChangeResponse(count=done[0].count, size=sum(d.size for d in done))

    async def remove(self, image_ids: Sequence[int]) -> IndexChangeResponse:
        done = await self._everywhere([s.remove(image_ids) for s in self.shards])
        return IndexChangeResponse(count=sum(d.count for d in done),
                                   size=sum(d.size for d in done))

    async def start_rebuild(self) -> RebuildStatus:
        # one fit serves every shard: the others load the new version when they see it active
        return await self.shards[0].start_rebuild()

    async def rebuild_status(self) -> RebuildStatus:
        return await self.shards[0].rebuild_status()

    async def stats(self) -> IndexStats:
        """Shard 0's figures with the size and memory of all shards added up."""
        every = await asyncio.gather(*(s.stats() for s in self.shards), return_exceptions=True)
        for i, r in enumerate(every):
            if isinstance(r, BaseException):
                raise _as_dependency_error(i, r)
        all_stats = [r for r in every if isinstance(r, IndexStats)]
        return all_stats[0].model_copy(update={
            "size": sum(s.size for s in all_stats),
            "memory_bytes": sum(s.memory_bytes for s in all_stats)})

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.aclose()


def make_index_client(settings: Settings, space: str = "") -> IndexClient:
    """One client for one search URL; a fan-out over `search_urls` when there are several
    (`space="duplicates"`: their near-duplicate index)."""
    shards = [HttpIndexClient(url, timeout=settings.http_timeout_s,
                              service_token=service_token(settings), space=space)
              for url in settings.shard_urls]
    if len(shards) == 1:
        return shards[0]
    return ShardedIndexClient(shards, timeout_s=settings.search_shard_timeout_s,
                              on_failure=settings.search_on_shard_failure)
