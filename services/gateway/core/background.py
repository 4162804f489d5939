"""Background work of the gateway's lifespan: warm up the schema, re-queue lost caption work
(and photos whose OCR task was lost), fail the imports whose gateway died
(`imports.fail_stale_imports`).

A caption task can vanish without failing: its worker was SIGKILLed (Redis redelivers an
unacknowledged task only after the visibility timeout, an hour) or Redis restarted without
persistence. The images stay `pending` in the database, which is the truth, so the gateway
re-queues images unfinished for `requeue_after_s` whenever the queue has drained.
"""

from __future__ import annotations

import logging
from functools import partial

import anyio

from services.gateway.core.context import GatewayContext
from services.gateway.imports import STALE_AFTER_S, fail_stale_imports
from shared.consistency import requeue_stuck, requeue_unread_texts
from shared.errors import CapsearchError

log = logging.getLogger(__name__)

WARMUP_RETRY_MAX_S = 30.0


async def warm_up(context: GatewayContext) -> None:
    """Create the schema as soon as the database answers (requests would do it too)."""
    if context.schema is None:
        return
    delay = 0.5
    while not context.schema.ready:
        try:
            await anyio.to_thread.run_sync(context.schema.ensure)
        except CapsearchError:
            await anyio.sleep(delay)
            delay = min(delay * 2, WARMUP_RETRY_MAX_S)


async def _requeue_unread_texts(context: GatewayContext) -> None:
    assert context.ocr_queue is not None
    sweep = partial(requeue_unread_texts, context.session_factory, context.ocr_queue,
                    older_than_s=context.settings.requeue_after_s)
    try:
        ids = await anyio.to_thread.run_sync(sweep)
    except Exception as exc:  # database or broker down: the next sweep tries again
        log.warning("re-queueing photos for OCR failed: %s", type(exc).__name__)
        return
    if ids:
        log.info("re-queued %d photos whose text was never read, e.g. %s", len(ids), ids[:10])


async def sweep_forever(context: GatewayContext) -> None:
    """Every `requeue_interval_s`, re-queue images whose caption task was lost."""
    settings = context.settings
    sweep = partial(requeue_stuck, context.session_factory, context.queue,
                    older_than_s=settings.requeue_after_s)
    while True:
        await anyio.sleep(settings.requeue_interval_s)
        if not context.schema_ready:
            continue
        try:
            ids = await anyio.to_thread.run_sync(sweep)
        except Exception as exc:  # database or broker down: the next sweep tries again
            log.warning("re-queueing unfinished images failed: %s",
                        str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
            continue
        if ids:
            log.info("re-queued %d images whose caption task was lost, e.g. %s", len(ids),
                     ids[:10])
        if context.ocr_queue is not None:
            await _requeue_unread_texts(context)
        try:
            stale = await anyio.to_thread.run_sync(fail_stale_imports, context.session_factory)
        except Exception as exc:
            log.warning("failing stale imports failed: %s", type(exc).__name__)
            continue
        if stale:
            log.warning("imports %s made no progress for %.0f s (their gateway died): failed",
                        stale, STALE_AFTER_S)
