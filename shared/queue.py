"""How the gateway hands new images to captioning: a Celery queue or an in-process one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from celery import Celery

from shared.celery_app import CAPTION_QUEUE, CAPTION_TASK, OCR_QUEUE, OCR_TASK
from shared.errors import DependencyUnavailable
from shared.logging import request_id_var


class CaptionQueue(Protocol):
    """Accepts image ids for captioning; must not return before the work is durable."""

    def enqueue(self, image_ids: Sequence[int]) -> None: ...


class CeleryCaptionQueue:
    """Sends `capsearch.caption_images` tasks to the `caption` queue, in micro-batches (or
    another task to its queue: `ocr_queue` makes the OCR stage's)."""

    def __init__(self, app: Celery, batch_size: int, *, task: str = CAPTION_TASK,
                 queue: str = CAPTION_QUEUE) -> None:
        self._app = app
        self._batch = max(1, batch_size)
        self._task = task
        self._queue = queue

    def enqueue(self, image_ids: Sequence[int]) -> None:
        ids = [int(i) for i in image_ids]
        try:
            for start in range(0, len(ids), self._batch):
                self._app.send_task(
                    self._task,
                    args=[ids[start:start + self._batch]],
                    queue=self._queue,
                    headers={"request_id": request_id_var.get()},
                    retry=True,
                    retry_policy={"max_retries": 3, "interval_start": 0.2,
                                  "interval_step": 0.5, "interval_max": 2},
                )
        except Exception as exc:  # kombu OperationalError, redis ConnectionError, ...
            raise DependencyUnavailable(f"the {self._queue} queue is unavailable: {exc}"
                                        ) from exc

    def backlog(self) -> int | None:
        """Tasks waiting in the broker (not those a worker holds); None if it is unreachable."""
        from kombu import Queue
        from kombu.exceptions import ChannelError

        try:
            with self._app.connection_for_read() as conn:
                conn.ensure_connection(max_retries=1)
                queue = Queue(self._queue)(conn.default_channel)
                try:
                    _, waiting, _ = queue.queue_declare(passive=True)
                except ChannelError:  # never declared (or the broker lost it): nothing waits
                    return 0
                return int(waiting)
        except Exception:
            return None


def ocr_queue(app: Celery, batch_size: int) -> CeleryCaptionQueue:
    """The OCR stage's queue: `capsearch.read_texts` tasks on queue `ocr`."""
    return CeleryCaptionQueue(app, batch_size, task=OCR_TASK, queue=OCR_QUEUE)
