"""Queries first: the embedded caption worker runs below the server's priority, and so do the
threads it starts (Linux keeps a nice value per thread)."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import services.caption.inprocess as inprocess
from services.caption.inprocess import InProcessCaptionQueue
from services.caption.pipeline import PipelineDeps
from shared.config import Settings
from shared.db import make_engine, make_session_factory
from shared.db.migrate import upgrade
from shared.scheduling import lower_thread_priority, thread_nice
from shared.storage import LocalBlobStore

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="threads have a nice value of their own on Linux")


def _deps(tmp_path: Path, **settings: Any) -> PipelineDeps:
    config = Settings(data_dir=tmp_path, **settings)
    engine = make_engine(f"sqlite:///{tmp_path / 'capsearch.db'}")
    upgrade(engine)
    return PipelineDeps(settings=config, session_factory=make_session_factory(engine),
                        store=LocalBlobStore(config.blob_dir), captioner=None,  # type: ignore[arg-type]
                        encoder=None, index=None)  # type: ignore[arg-type]


def _record_priorities(monkeypatch: pytest.MonkeyPatch) -> dict[str, int | None]:
    """Replace the pipeline with one that notes the nice value of the worker thread and of a
    pool thread it starts, as the CNN's streams start on the first batch."""
    seen: dict[str, int | None] = {}

    def caption_images(batch: list[int], *, deps: PipelineDeps) -> None:
        seen["worker"] = thread_nice()
        with ThreadPoolExecutor(1, thread_name_prefix="cnn") as streams:
            seen["stream"] = streams.submit(thread_nice).result()

    monkeypatch.setattr(inprocess, "caption_images", caption_images)
    return seen


def test_the_worker_and_the_threads_it_starts_run_below_the_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _record_priorities(monkeypatch)
    server = thread_nice()
    queue = InProcessCaptionQueue(_deps(tmp_path, worker_nice=10))
    queue.start()
    try:
        queue.enqueue([1])
        assert queue.wait_idle(timeout=30)
    finally:
        queue.close()
    assert server is not None and server < 10
    assert seen == {"worker": 10, "stream": 10}
    assert thread_nice() == server  # the server's own threads keep their priority


def test_worker_nice_zero_leaves_the_priority_alone(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _record_priorities(monkeypatch)
    queue = InProcessCaptionQueue(_deps(tmp_path, worker_nice=0))
    queue.start()
    try:
        queue.enqueue([1])
        assert queue.wait_idle(timeout=30)
    finally:
        queue.close()
    assert seen["worker"] == seen["stream"] == thread_nice()


def test_lowering_a_thread_never_raises_its_priority_back() -> None:
    results: list[int | None] = []

    def body() -> None:
        lower_thread_priority(12)
        results.append(lower_thread_priority(5))  # already lower: stays at 12

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert results == [12]
