"""FastAPI dependencies of the search service and the thread pool its blocking work runs in."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, ParamSpec, TypeVar

from fastapi import Depends, Request

from services.search.service import IndexService
from shared.devices import cpu_streams
from shared.errors import DependencyUnavailable

P = ParamSpec("P")
T = TypeVar("T")


class BlockingWork:
    """A bounded thread pool: matmuls, database calls and rebuilds never run on the event loop."""

    def __init__(self, max_workers: int | None = None) -> None:
        # the cores this container may use, + 2 for database waits
        workers = max_workers or min(8, cpu_streams() + 2)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="search")

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        # copy the context so the request id reaches the logs written in the worker thread
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def get_service(request: Request) -> IndexService:
    service: IndexService = request.app.state.service
    return service


def get_dup_service(request: Request) -> IndexService:
    """The near-duplicate index (503 in an app built without one)."""
    service: IndexService | None = request.app.state.dup_service
    if service is None:
        raise DependencyUnavailable("this search service holds no near-duplicate index")
    return service


def get_work(request: Request) -> BlockingWork:
    work: BlockingWork = request.app.state.work
    return work


ServiceDep = Annotated[IndexService, Depends(get_service)]
DupServiceDep = Annotated[IndexService, Depends(get_dup_service)]
WorkDep = Annotated[BlockingWork, Depends(get_work)]
