"""How the gateway hands work to the caption worker: new images to caption (a Celery queue or
an in-process one), and a photo outside the collection to turn into a query vector."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Protocol

import anyio
import numpy as np
from celery import Celery
from numpy.typing import NDArray

from shared.celery_app import (
    CAPTION_QUEUE,
    CAPTION_TASK,
    EMBED_PHOTO_TASK,
    OCR_QUEUE,
    OCR_TASK,
    SIMILAR_QUEUE,
)
from shared.errors import DependencyError, DependencyTimeout, DependencyUnavailable
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


class PhotoEncoder(Protocol):
    """A checked photo's bytes → the vector the index serves for it, computed by the ingest
    models (`services/caption/example.py`), nothing stored."""

    async def embed_photo(self, data: bytes) -> NDArray[np.float32]: ...


class CeleryPhotoEncoder:
    """Sends `capsearch.embed_photo` to the `similar` queue and waits for its vector: 504 after
    `timeout_s` (the message expires then, so no worker spends a pass on it later), 503 when
    the broker is down, 502 when the worker failed."""

    def __init__(self, app: Celery, timeout_s: float) -> None:
        self._app = app
        self._timeout_s = timeout_s

    async def embed_photo(self, data: bytes) -> NDArray[np.float32]:
        return await anyio.to_thread.run_sync(self._embed, data)

    def _embed(self, data: bytes) -> NDArray[np.float32]:
        """Blocking, in a thread of its own: several wait at once on the result consumer,
        whose pubsub Celery serialises since 5.7 (the floor in pyproject.toml)."""
        from celery.exceptions import TimeoutError as CeleryTimeout

        try:
            result = self._app.send_task(
                EMBED_PHOTO_TASK, args=[base64.b64encode(data).decode("ascii")],
                queue=SIMILAR_QUEUE, expires=self._timeout_s,
                headers={"request_id": request_id_var.get()})
        except Exception as exc:  # kombu OperationalError, redis ConnectionError, ...
            raise DependencyUnavailable(f"the caption queue is unavailable: {exc}") from exc
        try:
            answer: Any = result.get(timeout=self._timeout_s, propagate=False)
        except CeleryTimeout:
            raise DependencyTimeout(f"no caption worker answered within {self._timeout_s:g} s "
                                    "(CAPSEARCH_SIMILAR_TIMEOUT_S)") from None
        except Exception as exc:
            raise DependencyUnavailable(f"the result backend is unavailable: {exc}") from exc
        finally:
            result.forget()
        if not isinstance(answer, dict) or "vector" not in answer:
            raise DependencyError(f"the caption worker could not embed the photo: {answer}")
        return np.asarray(answer["vector"], dtype=np.float32)
