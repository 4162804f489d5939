"""The embedded mode's caption worker: one background thread, no broker.

Ids are queued in memory; the images themselves are already durable as `pending` rows, so
`start()` re-queues whatever a previous process left `pending` or `captioned` (crash recovery).
Queries go first: the thread lowers its own OS priority to `worker_nice` before its first
batch, and the pool threads it starts (the CNN's streams, one single-threaded pass per usable
core at most) inherit that priority (`shared/scheduling.py`).

Text in photos (`photo_text.py`) is a second lane: the ids of every caption batch join it,
and the thread reads them only while no caption work waits, so OCR never slows captioning.
`start()` also queues indexed photos whose text was never read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import anyio
import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select

from services.caption.example import embed_photo
from services.caption.photo_text import OcrDeps, read_photo_texts
from services.caption.pipeline import (
    TRANSIENT_ERRORS,
    PipelineDeps,
    caption_images,
    mark_unfinished_failed,
)
from shared.db import ImageRecord, ImageStatus
from shared.db.texts import ocr_waiting
from shared.errors import DependencyUnavailable
from shared.scheduling import lower_thread_priority

log = logging.getLogger(__name__)


class InProcessCaptionQueue:
    """A `CaptionQueue` whose worker thread runs `caption_images` on micro-batches."""

    def __init__(self, deps: PipelineDeps, *, ocr: OcrDeps | None = None,
                 max_retries: int | None = None, backoff_s: float = 0.5,
                 backoff_max_s: float = 30.0) -> None:
        self._deps = deps
        self._ocr = ocr
        self._ocr_queued: dict[int, None] = {}  # photos indexed, text not read yet
        self._batch_size = deps.settings.caption_batch_size
        self._max_retries = (deps.settings.worker_max_retries if max_retries is None
                             else max_retries)
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._queued: dict[int, None] = {}  # an ordered set: first queued, first captioned
        self._in_flight = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Re-queue the images a previous process left unfinished, then start the thread."""
        if self._thread is not None:
            return
        with self._deps.session_factory() as session:
            leftover = session.scalars(
                select(ImageRecord.id)
                .where(ImageRecord.status.in_([ImageStatus.pending.value,
                                               ImageStatus.captioned.value]))
                .order_by(ImageRecord.id)
            ).all()
            unread = ocr_waiting(session, limit=None) if self._ocr is not None else []
        if leftover:
            log.info("re-queueing %d images left unfinished", len(leftover))
            self.enqueue(leftover)
        if unread:
            log.info("queueing %d indexed photos whose text was not read yet", len(unread))
            with self._cond:
                self._ocr_queued.update(dict.fromkeys(unread))
        self._thread = threading.Thread(target=self._run, name="caption-worker", daemon=True)
        self._thread.start()

    def enqueue(self, image_ids: Sequence[int]) -> None:
        if self._stop.is_set():
            raise DependencyUnavailable("the caption queue is closed")
        with self._cond:
            self._queued.update(dict.fromkeys(int(i) for i in image_ids))
            self._cond.notify_all()

    def backlog(self) -> int:
        """Image ids waiting (the queue-depth metric; Celery's queue counts task messages)."""
        with self._cond:
            return len(self._queued)

    def ocr_backlog(self) -> int:
        """Photos waiting for their text to be read."""
        with self._cond:
            return len(self._ocr_queued)

    def wait_idle(self, timeout: float | None = None, *, ocr: bool = False) -> bool:
        """Block until every caption queued so far is processed (with `ocr`, every photo's
        text read too); False if `timeout` ran out."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._queued and not self._in_flight
                and not (ocr and self._ocr_queued), timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the batch in progress; what is still queued stays `pending` in the DB."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the caption worker did not stop within %.0f s", timeout)
                return
        if self._ocr is not None:
            self._ocr.engine.close()  # its thread pool; the worker thread no longer reads

    def _run(self) -> None:
        nice = lower_thread_priority(self._deps.settings.worker_nice)
        log.info("caption worker thread at nice %s", nice)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queued or self._ocr_queued
                                    or self._stop.is_set())
                if self._stop.is_set():
                    return
                # captions first: the text of a photo is read only when none waits
                lane = self._queued or self._ocr_queued
                size = (self._batch_size if lane is self._queued
                        else self._deps.settings.ocr_batch_size)
                batch = list(lane)[:size]
                for image_id in batch:
                    del lane[image_id]
                self._in_flight = len(batch)
            try:
                if lane is self._queued:
                    self._process(batch)
                else:
                    self._read_texts(batch)
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()

    def _process(self, batch: list[int]) -> None:
        """One batch with retries on transient errors; anything else fails the batch at once."""
        for attempt in range(self._max_retries + 1):
            try:
                report = caption_images(batch, deps=self._deps)
                if self._ocr is not None:
                    with self._cond:
                        self._ocr_queued.update(dict.fromkeys(report.indexed + report.skipped))
                return
            except TRANSIENT_ERRORS as exc:
                if attempt == self._max_retries:
                    self._give_up(batch, exc, attempt + 1)
                    return
                delay = min(self._backoff_max_s, self._backoff_s * 2 ** attempt)
                log.warning("caption batch failed (try %d), retrying in %.1f s: %s",
                            attempt + 1, delay, exc)
                if self._stop.wait(delay):
                    return  # closing: the images stay pending and are re-queued on start
            except Exception as exc:
                log.exception("caption batch failed")
                self._give_up(batch, exc, attempt + 1)
                return

    def _read_texts(self, batch: list[int]) -> None:
        """One OCR batch with retries on transient errors; giving up fails no photo."""
        assert self._ocr is not None
        for attempt in range(self._max_retries + 1):
            try:
                # captions waiting, or closing: the rest waits (re-read on the next start)
                report = read_photo_texts(
                    batch, deps=self._ocr,
                    yield_to_captions=lambda: bool(self._queued) or self._stop.is_set())
                if report.deferred:  # back to the front of the lane, after the captions
                    with self._cond:
                        self._ocr_queued = dict.fromkeys(report.deferred) | self._ocr_queued
                return
            except TRANSIENT_ERRORS as exc:
                if attempt == self._max_retries:
                    log.error("gave up reading the text of photos %s after %d tries: %s",
                              batch, attempt + 1, exc)
                    return
                delay = min(self._backoff_max_s, self._backoff_s * 2 ** attempt)
                log.warning("ocr batch failed (try %d), retrying in %.1f s: %s",
                            attempt + 1, delay, exc)
                if self._stop.wait(delay):
                    return  # closing: read again on the next start
            except Exception:
                log.exception("reading the text of photos %s failed", batch)
                return

    def _give_up(self, batch: list[int], exc: Exception, tries: int) -> None:
        reason = f"captioning gave up after {tries} tries: {type(exc).__name__}: {exc}"
        try:
            mark_unfinished_failed(self._deps.session_factory, batch, reason)
        except Exception:
            log.exception("could not mark images %s failed", batch)


class InProcessPhotoEncoder:
    """`PhotoEncoder` of the embedded mode: the ingest models of this process, in a thread."""

    def __init__(self, deps: PipelineDeps) -> None:
        self._deps = deps

    async def embed_photo(self, data: bytes) -> NDArray[np.float32]:
        return await anyio.to_thread.run_sync(embed_photo, data, self._deps)
