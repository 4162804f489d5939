"""The embedded mode's composition root: gateway + encoder + search + an in-process caption
worker in ONE process, on SQLite and a local blob folder, no external service.

This is the one place allowed to import several services: it wires their in-process objects
behind the same protocols the stack reaches over HTTP and Celery.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from capsearch.client import CapsearchClient
from shared.clients import SyncEncoder
from shared.config import Settings
from shared.db import EmbeddingKind, make_engine, make_session_factory
from shared.db.migrate import upgrade
from shared.duplicates import duplicate_vector_model
from shared.storage import BlobStore, make_blob_store

if TYPE_CHECKING:  # the services load torch & co.: imported when the stack is built, not before
    from services.caption.inprocess import InProcessCaptionQueue, InProcessPhotoEncoder
    from services.search.service import IndexService

log = logging.getLogger(__name__)


@dataclass
class EmbeddedStack:
    """Every part of a one-process capsearch, built once and closed once."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    store: BlobStore
    encoder: SyncEncoder
    index: IndexService
    queue: InProcessCaptionQueue
    photos: InProcessPhotoEncoder | None = None
    duplicates: IndexService | None = None  # the near-duplicate index (None: duplicates off)

    def gateway_app(self, *, require_keys: bool = False) -> FastAPI:
        """The gateway over the in-process parts; without keys only for a loopback listener."""
        from services.encoder.inprocess import InProcessEncoderClient
        from services.gateway.app import create_app
        from services.gateway.core.context import GatewayContext
        from services.search.inprocess import InProcessIndexClient

        auth = self.settings.auth.model_copy(update={"enabled": require_keys})
        context = GatewayContext(
            settings=self.settings.model_copy(update={"auth": auth}),
            session_factory=self.session_factory,
            store=self.store,
            encoder=InProcessEncoderClient(self.encoder),
            index=InProcessIndexClient(self.index, self.duplicates),
            queue=self.queue,
            photos=self.photos,
        )
        return create_app(self.settings, context=context)

    def close(self) -> None:
        self.queue.close()
        self.engine.dispose()


def build_embedded(settings: Settings) -> EmbeddedStack:
    """Load the models, open the database and blob folder, start the in-process worker."""
    from services.caption.captioners import build_captioner
    from services.caption.inprocess import InProcessCaptionQueue, InProcessPhotoEncoder
    from services.caption.photo_text import OcrDeps, build_ocr_engine
    from services.caption.pipeline import PipelineDeps
    from services.caption.projection import build_embedder
    from services.encoder.encoder import build_text_encoder
    from services.search.service import IndexService

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine)  # embedded mode migrates its own database
    session_factory = make_session_factory(engine)
    store = make_blob_store(settings)

    # the CNN's passes run single-threaded, in parallel streams: the encoder's alike
    encoder = build_text_encoder(settings, streams=embedded_streams(settings))
    encoder.load()
    index = IndexService(settings, session_factory)
    index.load()
    captioner = build_captioner(settings.captioner, settings)
    captioner.load()
    embedder = build_embedder(settings)  # the image-side vector of `image`/`fused`
    if embedder is not None:
        embedder.load()
    duplicates = None
    if settings.duplicates:  # the near-duplicate vectors' own index
        duplicates = IndexService(settings, session_factory, kind=EmbeddingKind.dup,
                                  model=duplicate_vector_model(settings))
        duplicates.load()
    deps = PipelineDeps(settings=settings, session_factory=session_factory, store=store,
                        captioner=captioner, encoder=encoder, index=index, embedder=embedder,
                        duplicates=duplicates)
    # text in photos: loaded on the first photo it reads, after the captions
    reader = build_ocr_engine(settings, streams=embedded_streams(settings))
    ocr = (OcrDeps(session_factory=session_factory, store=store, engine=reader)
           if reader is not None else None)
    queue = InProcessCaptionQueue(deps, ocr=ocr)
    queue.start()
    log.info("embedded capsearch ready: data in %s, captioner %s", settings.data_dir,
             settings.captioner)
    return EmbeddedStack(settings=settings, engine=engine, session_factory=session_factory,
                         store=store, encoder=encoder, index=index, queue=queue,
                         photos=InProcessPhotoEncoder(deps), duplicates=duplicates)


def embedded_streams(settings: Settings) -> int:
    """Parallel single-threaded passes for the in-process models: one per core on a CPU."""
    from shared.devices import model_streams, resolve_device

    return model_streams(resolve_device(settings.device), settings.cpu_streams)


@contextmanager
def embedded_client(settings: Settings) -> Iterator[CapsearchClient]:
    """A fresh embedded instance behind a real HTTP server on a free port, and its client."""
    from capsearch.server import BackgroundServer

    stack = build_embedded(settings)
    try:
        with BackgroundServer(stack.gateway_app()) as server, \
                CapsearchClient(server.url) as client:
            yield client
    finally:
        stack.close()
