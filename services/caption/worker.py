"""The Celery transport around the pipeline: the `capsearch.caption_images` task, the
`capsearch.read_texts` task of the OCR stage that follows it (`photo_text.py`), and
`capsearch.embed_photo` (a query photo's vector, `example.py`, answered through the result
backend while the gateway waits).

The task takes image ids (never objects), builds its dependencies once per worker process (at
start-up, `WorkerContext.warm_up`, or else on first use), retries transient failures with
exponential backoff and, when it gives up, marks the images of its batch that are not indexed
yet `failed` with the reason.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery, Task
from sqlalchemy.orm import Session, sessionmaker

from services.caption.captioners import build_captioner
from services.caption.example import embed_photo
from services.caption.photo_text import OcrDeps, build_ocr_engine, read_photo_texts
from services.caption.pipeline import (
    TRANSIENT_ERRORS,
    PipelineDeps,
    caption_images,
    mark_unfinished_failed,
)
from services.caption.projection import build_embedder
from shared.blocking import BlockingEncoder, BlockingIndex
from shared.celery_app import (
    CAPTION_TASK,
    EMBED_PHOTO_TASK,
    OCR_TASK,
    SIMILAR_QUEUE,
    make_celery,
)
from shared.clients import make_encoder_client
from shared.config import Settings, get_settings
from shared.db import make_engine, make_session_factory
from shared.db.migrate import require_current
from shared.errors import CapsearchError
from shared.logging import request_id_var
from shared.queue import CeleryCaptionQueue, ocr_queue
from shared.shards import make_index_client
from shared.storage import make_blob_store

log = logging.getLogger(__name__)

RETRY_BACKOFF_MAX_S = 300


class WorkerContext:
    """What a worker process builds once: the database first (cheap), then the models."""

    def __init__(self, settings: Settings,
                 build_deps: Callable[[Settings, sessionmaker[Session]], PipelineDeps]
                 | None = None,
                 build_ocr: Callable[[Settings, sessionmaker[Session]], OcrDeps | None]
                 | None = None) -> None:
        self.settings = settings
        self._build_deps = build_deps or build_worker_deps
        self._build_ocr = build_ocr or build_worker_ocr
        self._session_factory: sessionmaker[Session] | None = None
        self._deps: PipelineDeps | None = None
        self._ocr: OcrDeps | None = None
        self._lock = threading.Lock()

    def session_factory(self) -> sessionmaker[Session]:
        with self._lock:
            if self._session_factory is None:
                if self.settings.database_url is None:  # the SQLite file under data_dir
                    self.settings.data_dir.mkdir(parents=True, exist_ok=True)
                engine = make_engine(self.settings.sqlalchemy_url)
                try:
                    require_current(engine)  # `capsearch db upgrade` migrates, never a worker
                except BaseException:
                    engine.dispose()
                    raise
                self._session_factory = make_session_factory(engine)
            return self._session_factory

    def warm_up(self) -> bool:
        """Build the models before the first task (the first batch would otherwise pay for
        loading and freezing them); on failure log it and leave the build to the first task,
        which retries it as usual. True when the models are ready."""
        start = time.perf_counter()
        try:
            self.deps()
        except Exception as exc:  # a failed start-up must not kill the worker
            log.warning("models not loaded at start-up (the first task will try again): %s: %s",
                        type(exc).__name__, exc)
            return False
        log.info("caption worker ready: models loaded in %.1f s", time.perf_counter() - start)
        return True

    def deps(self) -> PipelineDeps:
        session_factory = self.session_factory()
        with self._lock:
            if self._deps is None:
                self._deps = self._build_deps(self.settings, session_factory)
            return self._deps

    def ocr_deps(self) -> OcrDeps | None:
        """The OCR stage's engine (loaded on its first photo) and stores, built apart from
        the caption models; None when OCR is off or its package missing."""
        session_factory = self.session_factory()
        with self._lock:
            if self._ocr is None:
                self._ocr = self._build_ocr(self.settings, session_factory)
            return self._ocr


def build_worker_deps(settings: Settings, session_factory: sessionmaker[Session]
                      ) -> PipelineDeps:
    """Stack mode: models in this process, encoder and index over HTTP, blobs from settings."""
    captioner = build_captioner(settings.captioner, settings)
    captioner.load()
    embedder = build_embedder(settings)  # the image-side vector of `image`/`fused`
    if embedder is not None:
        embedder.load()
    return PipelineDeps(
        embedder=embedder,
        settings=settings,
        session_factory=session_factory,
        store=make_blob_store(settings),
        captioner=captioner,
        # the gateway's async clients behind thin blocking shells
        encoder=BlockingEncoder(make_encoder_client(settings)),
        # every search shard receives every add and keeps the vectors it owns
        index=BlockingIndex(make_index_client(settings)),
        duplicates=(BlockingIndex(make_index_client(settings, space="duplicates"))
                    if settings.duplicates else None),
    )


def build_worker_ocr(settings: Settings, session_factory: sessionmaker[Session]
                     ) -> OcrDeps | None:
    """The OCR stage's engine (not loaded yet) and blob store; None when OCR is off."""
    engine = build_ocr_engine(settings)
    if engine is None:
        return None
    return OcrDeps(session_factory=session_factory, store=make_blob_store(settings),
                   engine=engine)


def request_id_of(request: Any) -> str:
    """The request id the gateway put in the task headers (protocol 2 lifts them onto request)."""
    headers = getattr(request, "headers", None) or {}
    rid = getattr(request, "request_id", None) or headers.get("request_id")
    return str(rid or (request.id or "-")[:16])


class CaptionTask(Task):  # type: ignore[misc]
    """Base of the caption task: request id in the logs, start/end logged, give-up handled."""

    worker_context: WorkerContext
    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = 2
    retry_backoff_max = RETRY_BACKOFF_MAX_S
    retry_jitter = True

    @contextmanager
    def _request_context(self) -> Iterator[None]:
        token = request_id_var.set(request_id_of(self.request))
        try:
            yield
        finally:
            request_id_var.reset(token)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._request_context():
            log.info("task %s start (try %d)", self.name, self.request.retries + 1)
            return super().__call__(*args, **kwargs)

    def signature_from_request(self, request: Any = None, *args: Any, **kwargs: Any) -> Any:
        """The retry message: protocol 2 drops custom headers, so carry the request id on."""
        signature = super().signature_from_request(request, *args, **kwargs)
        headers = dict(signature.options.get("headers") or {})
        headers["request_id"] = request_id_of(request if request is not None else self.request)
        signature.options["headers"] = headers
        return signature

    def on_retry(self, exc: Exception, task_id: str, args: Any, kwargs: Any,
                 einfo: Any) -> None:
        with self._request_context():
            log.warning("task %s retrying after try %d: %s", task_id, self.request.retries + 1,
                        exc)

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        image_ids = list(args[0] if args else kwargs.get("image_ids", []))
        reason = (f"captioning gave up after {self.request.retries + 1} tries: "
                  f"{type(exc).__name__}: {exc}")
        with self._request_context():
            try:
                count = mark_unfinished_failed(self.worker_context.session_factory(), image_ids,
                                               reason)
                log.error("task %s failed; %d images marked failed: %s", task_id, count, reason)
            except Exception:
                log.exception("task %s failed and its images could not be marked failed", task_id)


def register_caption_task(app: Celery, context: WorkerContext) -> Task:
    """Add `capsearch.caption_images` to the app, bound to this process's context."""

    @app.task(name=CAPTION_TASK, base=CaptionTask, bind=True, shared=False,
              worker_context=context,
              max_retries=context.settings.worker_max_retries)
    def caption_images_task(self: CaptionTask, image_ids: list[int]) -> dict[str, int]:
        report = caption_images([int(i) for i in image_ids], deps=self.worker_context.deps())
        settings = self.worker_context.settings
        if settings.ocr:  # the text follows, at lower priority; a retry sends it again
            ocr_queue(self.app, settings.ocr_batch_size).enqueue(
                report.indexed + report.skipped)
        return {"indexed": len(report.indexed), "failed": len(report.failed),
                "skipped": len(report.skipped)}

    return caption_images_task  # type: ignore[no-any-return]


class OcrTask(CaptionTask):
    """Base of the OCR task: retries as the caption task, but giving up fails no photo (it
    stays indexed; the gateway's re-queue sweep, or `capsearch doctor --repair`, sends it
    again)."""

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        with self._request_context():
            log.error("task %s gave up reading text after %d tries: %s: %s", task_id,
                      self.request.retries + 1, type(exc).__name__, exc)


def register_ocr_task(app: Celery, context: WorkerContext) -> Task:
    """Add `capsearch.read_texts` to the app, bound to this process's context."""

    @app.task(name=OCR_TASK, base=OcrTask, bind=True, shared=False, worker_context=context,
              max_retries=context.settings.worker_max_retries)
    def read_texts_task(self: OcrTask, image_ids: list[int]) -> dict[str, int]:
        deps = self.worker_context.ocr_deps()
        if deps is None:
            return {"read": 0, "failed": 0, "skipped": len(image_ids)}
        captions = CeleryCaptionQueue(self.app, 1)
        queries = CeleryCaptionQueue(self.app, 1, task=EMBED_PHOTO_TASK, queue=SIMILAR_QUEUE)
        report = read_photo_texts(
            [int(i) for i in image_ids], deps=deps,
            yield_to_captions=lambda: bool(queries.backlog()) or bool(captions.backlog()))
        if report.deferred:  # a query photo or a caption task came in: it goes first
            ocr_queue(self.app, self.worker_context.settings.ocr_batch_size).enqueue(
                report.deferred)
        return {"read": len(report.texts), "failed": len(report.failed),
                "skipped": len(report.skipped), "deferred": len(report.deferred)}

    return read_texts_task  # type: ignore[no-any-return]


def register_embed_photo_task(app: Celery, context: WorkerContext) -> Task:
    """Add `capsearch.embed_photo`: base64 bytes of a checked photo → {"vector": [...]}, or
    {"error": ...} when it does not decode (no retry: the gateway waits for this answer)."""

    @app.task(name=EMBED_PHOTO_TASK, bind=True, shared=False, ignore_result=False,
              max_retries=0, acks_late=False)
    def embed_photo_task(self: Task, data: str) -> dict[str, Any]:
        token = request_id_var.set(request_id_of(self.request))
        try:
            vector = embed_photo(base64.b64decode(data), context.deps())
            return {"vector": vector.tolist()}
        except CapsearchError as exc:
            return {"error": exc.message}
        finally:
            request_id_var.reset(token)

    return embed_photo_task  # type: ignore[no-any-return]


def create_celery_app(settings: Settings | None = None,
                      context: WorkerContext | None = None) -> Celery:
    """The worker's Celery app with its tasks registered (caption, OCR, query photos)."""
    settings = settings or get_settings()
    app = make_celery(settings)
    context = context or WorkerContext(settings)
    register_caption_task(app, context)
    register_ocr_task(app, context)
    register_embed_photo_task(app, context)
    return app
