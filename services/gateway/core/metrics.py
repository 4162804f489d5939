"""The gateway's scrape-time metrics: images by status, photos waiting for OCR, caption queue
depth and, in the embedded mode (index in this process), the index's size and version."""

from __future__ import annotations

import logging
import time

import anyio
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.gateway.core.context import GatewayContext
from shared.db import ImageRecord, ImageStatus
from shared.db.texts import count_ocr_waiting
from shared.metrics import (
    OCR_WAITING,
    QUEUE_DEPTH,
    Collect,
    set_image_counts,
    set_index_stats,
)

log = logging.getLogger(__name__)


def image_counts(session_factory: sessionmaker[Session]) -> dict[str, int]:
    with session_factory() as session:
        rows = session.execute(select(ImageRecord.status, func.count())
                               .group_by(ImageRecord.status))
        return {str(status): int(count) for status, count in rows}


def ocr_waiting_count(session_factory: sessionmaker[Session]) -> int:
    with session_factory() as session:
        return count_ocr_waiting(session)


# images by status are counted at most this often, however often /metrics is scraped
COUNT_EVERY_S = 10.0


class _ImageCounts:
    """The scrape-time count of images by status, refreshed at most every COUNT_EVERY_S."""

    def __init__(self) -> None:
        self._counted_at = -COUNT_EVERY_S

    async def __call__(self, context: GatewayContext) -> None:
        if not context.schema_ready:
            return  # no database yet: the gauges keep their last values
        if time.monotonic() - self._counted_at < COUNT_EVERY_S:
            return
        self._counted_at = time.monotonic()
        counts = await anyio.to_thread.run_sync(image_counts, context.session_factory)
        set_image_counts(counts, [s.value for s in ImageStatus])
        if context.settings.ocr:
            OCR_WAITING.set(await anyio.to_thread.run_sync(ocr_waiting_count,
                                                           context.session_factory))


async def _collect_queue(context: GatewayContext) -> None:
    backlog = getattr(context.queue, "backlog", None)
    if backlog is not None:
        waiting = await anyio.to_thread.run_sync(backlog)
        if waiting is not None:  # None: the broker is unreachable right now
            QUEUE_DEPTH.set(waiting)


async def _collect_index(context: GatewayContext) -> None:
    # in the stack the search service reports its own index; here only the in-process one
    if context.settings.queue_backend == "inprocess":
        stats = await context.index.stats()
        set_index_stats(size=stats.size, version=stats.index_version, clusters=stats.n_clusters)


def gateway_collector(app: FastAPI) -> Collect:
    """Refresh the gauges from the context the app holds (none yet while it starts)."""

    count_images = _ImageCounts()

    async def collect() -> None:
        context: GatewayContext | None = getattr(app.state, "context", None)
        if context is None:
            return
        for name, step in (("images", count_images), ("queue", _collect_queue),
                           ("index", _collect_index)):
            try:
                await step(context)
            except Exception as exc:  # one dead dependency must not hide the other gauges
                log.warning("metrics: %s failed: %s", name, exc)

    return collect
