"""The OCR stage behind its two transports: the Celery task after the caption task (run
eagerly, in-memory broker) and the in-process queue's lane, which yields to captions."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from celery import Celery
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from services.caption.inprocess import InProcessCaptionQueue
from services.caption.ocr import OcrEngine, OcrLine
from services.caption.photo_text import OcrDeps
from services.caption.pipeline import PipelineDeps
from services.caption.worker import WorkerContext, create_celery_app
from shared.celery_app import (
    CAPTION_QUEUE,
    CAPTION_TASK,
    EMBED_PHOTO_TASK,
    OCR_TASK,
    SIMILAR_QUEUE,
)
from shared.db.texts import count_ocr_waiting, texts_of
from shared.queue import ocr_queue

pytestmark = pytest.mark.slow

AddPhotos = Callable[[int], list[int]]
BOX = ((0, 0), (10, 0), (10, 5), (0, 5))


class SignEngine(OcrEngine):
    """Reads "EXIT" in every photo; notes how many captions waited at each read."""

    name = "sign"

    def __init__(self, captions_waiting: Callable[[], int] = lambda: 0) -> None:
        super().__init__()
        self.captions_waiting = captions_waiting
        self.seen_waiting: list[int] = []

    def _load(self) -> None:
        pass

    def _read(self, image: Image.Image) -> list[OcrLine]:
        self.seen_waiting.append(self.captions_waiting())
        return [OcrLine("EXIT", 0.99, BOX)]


def celery_app_for(deps: PipelineDeps, ocr: OcrDeps | None) -> Celery:
    settings = deps.settings.model_copy(update={"broker_url": "memory://",
                                                "result_backend": "cache+memory://",
                                                "ocr": ocr is not None})
    context = WorkerContext(settings, build_deps=lambda _s, _f: deps,
                            build_ocr=lambda _s, _f: ocr)
    return create_celery_app(settings, context)


def test_the_caption_task_sends_its_photos_to_the_ocr_queue(deps: PipelineDeps,
                                                           add_photos: AddPhotos) -> None:
    ids = add_photos(2)
    ocr = OcrDeps(session_factory=deps.session_factory, store=deps.store, engine=SignEngine())
    app = celery_app_for(deps, ocr)
    waiting = ocr_queue(app, 8).backlog() or 0  # the in-memory broker outlives a test
    assert app.tasks[CAPTION_TASK].apply(args=[ids]).get()["indexed"] == 2
    assert ocr_queue(app, 8).backlog() == waiting + 1  # one OCR task for the batch
    with deps.session_factory() as session:
        assert count_ocr_waiting(session) == 2  # searchable by caption already, text to come

    assert app.tasks[OCR_TASK].apply(args=[ids]).get() == {"read": 2, "failed": 0,
                                                          "skipped": 0, "deferred": 0}
    with deps.session_factory() as session:
        assert {i: r.text for i, r in texts_of(session, ids).items()} == {
            i: "EXIT" for i in ids}


def test_the_ocr_task_leaves_the_rest_of_its_batch_to_a_waiting_caption_task(
        deps: PipelineDeps, add_photos: AddPhotos) -> None:
    from kombu import Queue

    ids = add_photos(3)
    ocr = OcrDeps(session_factory=deps.session_factory, store=deps.store, engine=SignEngine())
    app = celery_app_for(deps, ocr)
    app.tasks[CAPTION_TASK].apply(args=[ids]).get()
    app.send_task(CAPTION_TASK, args=[[999]], queue=CAPTION_QUEUE)  # an upload came in
    try:
        waiting = ocr_queue(app, 8).backlog() or 0
        result = app.tasks[OCR_TASK].apply(args=[ids]).get()
        assert result == {"read": 1, "failed": 0, "skipped": 0, "deferred": 2}
        assert ocr_queue(app, 8).backlog() == waiting + 1  # the rest, behind the captions
    finally:
        with app.connection_for_write() as conn:
            Queue(CAPTION_QUEUE)(conn.default_channel).purge()


def test_the_ocr_task_also_leaves_the_rest_of_its_batch_to_a_waiting_photo_query(
        deps: PipelineDeps, add_photos: AddPhotos) -> None:
    from kombu import Queue

    ids = add_photos(3)
    ocr = OcrDeps(session_factory=deps.session_factory, store=deps.store, engine=SignEngine())
    app = celery_app_for(deps, ocr)
    app.tasks[CAPTION_TASK].apply(args=[ids]).get()
    app.send_task(EMBED_PHOTO_TASK, args=["eA=="], queue=SIMILAR_QUEUE)  # a user waits
    try:
        result = app.tasks[OCR_TASK].apply(args=[ids]).get()
        assert result == {"read": 1, "failed": 0, "skipped": 0, "deferred": 2}
    finally:
        with app.connection_for_write() as conn:
            Queue(SIMILAR_QUEUE)(conn.default_channel).purge()


def test_with_ocr_off_no_ocr_task_is_sent(deps: PipelineDeps, add_photos: AddPhotos) -> None:
    app = celery_app_for(deps, None)
    waiting = ocr_queue(app, 8).backlog()
    app.tasks[CAPTION_TASK].apply(args=[add_photos(1)]).get()
    assert ocr_queue(app, 8).backlog() == waiting


@pytest.fixture
def queue_with_ocr(deps: PipelineDeps) -> Iterator[tuple[InProcessCaptionQueue, SignEngine]]:
    holder: dict[str, InProcessCaptionQueue] = {}
    engine = SignEngine(lambda: holder["queue"].backlog())
    ocr = OcrDeps(session_factory=deps.session_factory, store=deps.store, engine=engine)
    holder["queue"] = InProcessCaptionQueue(deps, ocr=ocr, max_retries=1, backoff_s=0.01)
    yield holder["queue"], engine
    holder["queue"].close()


def test_the_in_process_lane_reads_text_only_while_no_caption_waits(
        queue_with_ocr: tuple[InProcessCaptionQueue, SignEngine],
        session_factory: sessionmaker[Session], add_photos: AddPhotos) -> None:
    queue, engine = queue_with_ocr
    ids = add_photos(6)  # caption_batch_size 4: after the first batch, two still wait
    queue.enqueue(ids)
    queue.start()
    assert queue.wait_idle(timeout=120, ocr=True)
    assert engine.seen_waiting and set(engine.seen_waiting) == {0}
    assert queue.ocr_backlog() == 0
    with session_factory() as session:
        assert {i: r.text for i, r in texts_of(session, ids).items()} == {i: "EXIT" for i in ids}


def test_start_queues_indexed_photos_whose_text_was_never_read(
        deps: PipelineDeps, add_photos: AddPhotos,
        session_factory: sessionmaker[Session]) -> None:
    ids = add_photos(2)
    plain = InProcessCaptionQueue(deps)  # no OCR: as before the stage existed
    plain.start()
    assert plain.wait_idle(timeout=120)
    plain.close()
    ocr = OcrDeps(session_factory=session_factory, store=deps.store, engine=SignEngine())
    queue = InProcessCaptionQueue(deps, ocr=ocr)
    try:
        queue.start()
        assert queue.wait_idle(timeout=60, ocr=True)
    finally:
        queue.close()
    with session_factory() as session:
        assert count_ocr_waiting(session) == 0 and set(texts_of(session, ids)) == set(ids)
