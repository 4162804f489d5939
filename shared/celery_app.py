"""The Celery app: queue names, routing and the reliability settings every worker needs."""

from __future__ import annotations

from celery import Celery

from shared.config import Settings, get_settings

CAPTION_QUEUE = "caption"
CAPTION_TASK = "capsearch.caption_images"
# a query by a photo outside the collection: its vector, computed while the request waits, on
# a queue of its own so it never waits behind the caption backlog (the worker takes it first)
SIMILAR_QUEUE = "similar"
EMBED_PHOTO_TASK = "capsearch.embed_photo"
# text in photos: the second, lower-priority stage after a photo is indexed
OCR_QUEUE = "ocr"
OCR_TASK = "capsearch.read_texts"
# the order a worker polls its queues in ("priority" below): a waiting user, then captions,
# then OCR
WORKER_QUEUES = (SIMILAR_QUEUE, CAPTION_QUEUE, OCR_QUEUE)


def make_celery(settings: Settings | None = None) -> Celery:
    """A Celery app bound to the settings' broker; tasks are registered by the caption worker."""
    settings = settings or get_settings()
    app = Celery(
        "capsearch",
        broker=settings.broker_url,
        backend=settings.result_backend or settings.broker_url,
    )
    app.conf.update(
        task_default_queue=CAPTION_QUEUE,
        task_routes={CAPTION_TASK: {"queue": CAPTION_QUEUE},
                     EMBED_PHOTO_TASK: {"queue": SIMILAR_QUEUE},
                     OCR_TASK: {"queue": OCR_QUEUE}},
        # a task is acknowledged only when it finished; a killed worker's task is redelivered
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # must exceed the longest task, or Redis redelivers a task that is still running;
        # "priority": a worker polls its queues in the order given (`similar,caption,ocr`), so
        # a query photo goes before any caption batch and OCR runs only while neither waits
        # (the default round-robin would alternate)
        broker_transport_options={"visibility_timeout": 3600,
                                  "queue_order_strategy": "priority"},
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_expires=3600,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app
