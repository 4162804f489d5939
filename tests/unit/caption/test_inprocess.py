"""The embedded mode's in-process caption queue."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from services.caption.inprocess import InProcessCaptionQueue
from services.caption.pipeline import PipelineDeps
from shared.db import ImageRecord
from shared.errors import DependencyUnavailable
from tests.unit.caption.conftest import CountingEncoder, statuses

pytestmark = pytest.mark.slow

AddPhotos = Callable[[int], list[int]]


@pytest.fixture
def queue(deps: PipelineDeps) -> Iterator[InProcessCaptionQueue]:
    q = InProcessCaptionQueue(deps, max_retries=2, backoff_s=0.01)
    yield q
    q.close()


def test_queued_images_are_drained(queue: InProcessCaptionQueue, deps: PipelineDeps,
                                   add_photos: AddPhotos) -> None:
    queue.start()
    ids = add_photos(5)  # caption_batch_size is 4: two micro-batches
    queue.enqueue(ids)
    assert queue.wait_idle(timeout=60)
    assert statuses(deps.session_factory, ids) == {i: "indexed" for i in ids}


def test_start_requeues_images_left_unfinished(queue: InProcessCaptionQueue,
                                               deps: PipelineDeps,
                                               add_photos: AddPhotos) -> None:
    ids = add_photos(2)  # pending before the queue existed, as after a crash
    queue.start()
    assert queue.wait_idle(timeout=60)
    assert statuses(deps.session_factory, ids) == {i: "indexed" for i in ids}


def test_transient_failures_are_retried(queue: InProcessCaptionQueue, deps: PipelineDeps,
                                        add_photos: AddPhotos,
                                        encoder: CountingEncoder) -> None:
    ids = add_photos(2)
    encoder.fail_with, encoder.failures_left = DependencyUnavailable("encoder down"), 2
    queue.start()
    assert queue.wait_idle(timeout=60)
    assert encoder.calls == 3
    assert statuses(deps.session_factory, ids) == {i: "indexed" for i in ids}


def test_images_fail_with_the_reason_when_retries_run_out(
        queue: InProcessCaptionQueue, deps: PipelineDeps, add_photos: AddPhotos,
        encoder: CountingEncoder) -> None:
    ids = add_photos(2)
    encoder.fail_with, encoder.failures_left = DependencyUnavailable("encoder down"), 99
    queue.start()
    assert queue.wait_idle(timeout=60)
    assert statuses(deps.session_factory, ids) == {i: "failed" for i in ids}
    with deps.session_factory() as session:
        error = session.get(ImageRecord, ids[0]).error  # type: ignore[union-attr]
    assert error is not None and "encoder down" in error and "3 tries" in error


def test_enqueue_after_close_is_refused(queue: InProcessCaptionQueue) -> None:
    queue.start()
    queue.close()
    with pytest.raises(DependencyUnavailable):
        queue.enqueue([1])
