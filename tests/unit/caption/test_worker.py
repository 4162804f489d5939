"""The Celery task around the pipeline (run eagerly with `apply`, no broker)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from celery import Celery
from numpy.typing import NDArray

from services.caption.pipeline import PipelineDeps
from services.caption.worker import WorkerContext, create_celery_app, request_id_of
from shared.celery_app import CAPTION_TASK, EMBED_PHOTO_TASK, OCR_TASK
from shared.config import Settings
from shared.db import ImageRecord
from shared.errors import DependencyTimeout
from shared.logging import request_id_var
from tests.unit.caption.conftest import CountingEncoder, statuses

pytestmark = pytest.mark.slow

AddPhotos = Callable[[int], list[int]]


def celery_app_for(deps: PipelineDeps, retries: int = 2) -> Celery:
    settings = deps.settings.model_copy(update={"worker_max_retries": retries,
                                                "broker_url": "memory://",
                                                "result_backend": "cache+memory://"})
    context = WorkerContext(settings, build_deps=lambda _s, _f: deps)
    return create_celery_app(settings, context)


def test_the_task_indexes_a_batch(deps: PipelineDeps, add_photos: AddPhotos) -> None:
    ids = add_photos(2)
    result = celery_app_for(deps).tasks[CAPTION_TASK].apply(args=[ids])
    assert result.get() == {"indexed": 2, "failed": 0, "skipped": 0}
    assert statuses(deps.session_factory, ids) == {i: "indexed" for i in ids}


def test_transient_failures_are_retried(deps: PipelineDeps, add_photos: AddPhotos,
                                        encoder: CountingEncoder) -> None:
    ids = add_photos(2)
    encoder.fail_with, encoder.failures_left = DependencyTimeout("encoder slow"), 2
    result = celery_app_for(deps, retries=2).tasks[CAPTION_TASK].apply(args=[ids])
    assert result.successful()
    assert encoder.calls == 3
    assert statuses(deps.session_factory, ids) == {i: "indexed" for i in ids}


def test_exhausted_retries_mark_the_batch_failed(deps: PipelineDeps, add_photos: AddPhotos,
                                                 encoder: CountingEncoder) -> None:
    ids = add_photos(2)
    encoder.fail_with, encoder.failures_left = DependencyTimeout("encoder slow"), 99
    result = celery_app_for(deps, retries=1).tasks[CAPTION_TASK].apply(args=[ids])
    assert result.failed()
    assert encoder.calls == 2
    assert statuses(deps.session_factory, ids) == {i: "failed" for i in ids}
    with deps.session_factory() as session:
        error = session.get(ImageRecord, ids[0]).error  # type: ignore[union-attr]
    assert error is not None and "encoder slow" in error


def test_the_request_id_from_the_headers_reaches_the_logs(deps: PipelineDeps,
                                                          add_photos: AddPhotos) -> None:
    seen: list[str] = []

    class Spy:
        def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
            seen.append(request_id_var.get())
            return deps.encoder.encode(texts)

    spied = PipelineDeps(**{**deps.__dict__, "encoder": Spy()})
    task = celery_app_for(spied).tasks[CAPTION_TASK]
    task.apply(args=[add_photos(1)], headers={"request_id": "req-42"}).get()
    assert seen == ["req-42"]


def test_a_retry_keeps_the_request_id(deps: PipelineDeps, add_photos: AddPhotos,
                                      encoder: CountingEncoder) -> None:
    seen: list[str] = []

    class Spy:
        def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
            seen.append(request_id_var.get())
            return encoder.encode(texts)

    encoder.fail_with, encoder.failures_left = DependencyTimeout("encoder slow"), 1
    spied = PipelineDeps(**{**deps.__dict__, "encoder": Spy()})
    task = celery_app_for(spied).tasks[CAPTION_TASK]
    task.apply(args=[add_photos(1)], headers={"request_id": "req-43"}).get()
    assert seen == ["req-43", "req-43"]


def test_request_id_is_read_from_protocol_2_attributes() -> None:
    class Request:
        id = "0123456789abcdef-task"
        headers = None
        request_id = "from-gateway"

    assert request_id_of(Request()) == "from-gateway"


def test_the_worker_builds_its_models_once(deps: PipelineDeps) -> None:
    built: list[int] = []

    def build(_settings: Settings, _factory: object) -> PipelineDeps:
        built.append(1)
        return deps

    context = WorkerContext(deps.settings, build_deps=build)  # type: ignore[arg-type]
    assert context.deps() is context.deps()
    assert built == [1]


def test_warm_up_builds_the_models_before_any_task_and_survives_a_failure(deps: PipelineDeps
                                                                         ) -> None:
    built: list[int] = []

    def build(_settings: Settings, _factory: object) -> PipelineDeps:
        built.append(1)
        if len(built) == 1:
            raise FileNotFoundError("no projection head")
        return deps

    context = WorkerContext(deps.settings, build_deps=build)  # type: ignore[arg-type]
    assert context.warm_up() is False  # logged, the worker still starts
    assert context.warm_up() is True and built == [1, 1]
    assert context.deps() is deps and built == [1, 1]  # the first task builds nothing more


def test_the_photo_task_answers_a_vector_or_why_not(deps: PipelineDeps,
                                                    coco_images: list[Path]) -> None:
    task = celery_app_for(deps).tasks[EMBED_PHOTO_TASK]
    data = coco_images[0].read_bytes()
    answer = task.apply(args=[base64.b64encode(data).decode()]).get()
    vector = np.asarray(answer["vector"], dtype=np.float32)
    assert vector.shape == (384,) and float(np.linalg.norm(vector)) == pytest.approx(1, abs=1e-4)
    refused = task.apply(args=[base64.b64encode(b"not a photo").decode()]).get()
    assert set(refused) == {"error"} and "image" in refused["error"]


def test_query_photos_have_a_queue_of_their_own() -> None:
    from shared.celery_app import SIMILAR_QUEUE, make_celery

    routes = make_celery(Settings(broker_url="memory://")).conf.task_routes
    assert routes[EMBED_PHOTO_TASK] == {"queue": SIMILAR_QUEUE}
    assert routes[CAPTION_TASK] == {"queue": "caption"}
    assert routes[OCR_TASK] == {"queue": "ocr"}


def test_the_worker_polls_query_photos_then_captions_then_ocr() -> None:
    """A user waits for a query photo; OCR goes only while nothing else waits."""
    from services.caption.__main__ import worker_queues
    from shared.celery_app import make_celery

    app = make_celery(Settings(broker_url="memory://"))
    assert app.conf.broker_transport_options["queue_order_strategy"] == "priority"
    assert worker_queues(Settings(ocr=True)) == "similar,caption,ocr"
    assert worker_queues(Settings(ocr=False)) == "similar,caption"
