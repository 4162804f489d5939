"""What the gateway talks to, built once per process, and the dependencies routes take from it.

`GatewayContext` holds the database, the blob store, the encoder and index clients and the
caption queue; `build_context` makes the stack's (the embedded mode hands in its own). Routes
never reach into it directly: they take `SessionDep`, `StoreDep`, `SettingsDep` or, for what
has no alias of its own, `ContextDep`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from services.gateway.core.schema import SchemaGate
from services.gateway.querycache import CachedTextEncoder, cache_entries
from shared.celery_app import make_celery
from shared.clients import EncoderClient, IndexClient, make_encoder_client
from shared.config import Settings
from shared.db import (
    make_engine,
    make_read_engine,
    make_read_session_factory,
    make_session_factory,
)
from shared.queue import (
    CaptionQueue,
    CeleryCaptionQueue,
    CeleryPhotoEncoder,
    PhotoEncoder,
    ocr_queue,
)
from shared.shards import make_index_client
from shared.storage import BlobStore, make_blob_store


@dataclass
class GatewayContext:
    """Everything the gateway talks to; built once per process (or handed in by embedded mode)."""

    settings: Settings
    session_factory: sessionmaker[Session]
    store: BlobStore
    encoder: EncoderClient
    index: IndexClient
    queue: CaptionQueue
    # a query photo outside the collection → its vector (the caption worker's models)
    photos: PhotoEncoder | None = None
    # checks the schema once the database answers (None: the caller migrated it already)
    schema: SchemaGate | None = None
    # sessions of the query path's reads (autocommit on Postgres); None: `session_factory`
    read_session_factory: sessionmaker[Session] | None = None
    # the OCR stage's queue, for re-sending photos whose text task was lost (None: OCR off,
    # or the embedded mode, whose in-process queue finds them itself at start)
    ocr_queue: CaptionQueue | None = None

    @property
    def reads(self) -> sessionmaker[Session]:
        """The session factory for reads that change nothing (search, similar)."""
        return self.read_session_factory or self.session_factory

    @property
    def schema_ready(self) -> bool:
        """Whether the schema is known to be current (always, when the caller migrated it)."""
        return self.schema is None or self.schema.ready

    def ensure_schema(self) -> None:
        """503 database_unavailable until the schema is current (blocking; a flag check after)."""
        if self.schema is not None:
            self.schema.ensure()


def build_context(settings: Settings) -> GatewayContext:
    """The production context: database, blob store, HTTP clients of encoder/search, Celery.

    Connects to nothing: the gateway starts while Postgres or S3 is down and answers 503
    until they are back (the schema is checked and the bucket created on first contact).
    """
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    celery = make_celery(settings)
    return GatewayContext(
        settings=settings,
        session_factory=make_session_factory(engine),
        store=make_blob_store(settings, require=False),
        # repeated queries skip the encoder (a bounded LRU of query vectors per model)
        encoder=CachedTextEncoder(make_encoder_client(settings),
                                  model=settings.embedding_model, max_entries=cache_entries()),
        index=make_index_client(settings),  # a fan-out when there are several shards
        queue=CeleryCaptionQueue(celery, settings.caption_batch_size),
        ocr_queue=ocr_queue(celery, settings.ocr_batch_size) if settings.ocr else None,
        photos=CeleryPhotoEncoder(celery, settings.similar_timeout_s),
        schema=SchemaGate(engine),
        read_session_factory=make_read_session_factory(make_read_engine(settings.sqlalchemy_url)),
    )


async def close_context(context: GatewayContext) -> None:
    """Close the HTTP clients and dispose the engine of a context built by `build_context`."""
    await context.encoder.aclose()
    await context.index.aclose()
    for factory in (context.session_factory, context.read_session_factory):
        engine = factory.kw.get("bind") if factory is not None else None
        if engine is not None:
            engine.dispose()


async def get_context(request: Request) -> GatewayContext:
    context: GatewayContext = request.app.state.context
    return context


ContextDep = Annotated[GatewayContext, Depends(get_context)]


async def get_settings_dep(context: ContextDep) -> Settings:
    return context.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_store(context: ContextDep) -> BlobStore:
    return context.store


StoreDep = Annotated[BlobStore, Depends(get_store)]


def get_session(context: ContextDep) -> Iterator[Session]:
    """A session per request; sync, so FastAPI runs it (and its users) in the thread pool."""
    context.ensure_schema()  # 503 database_unavailable until Postgres answers
    with context.session_factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def check_schema(context: ContextDep) -> None:
    """For routes that open sessions themselves (not through SessionDep): the schema must
    be current first, or the caller gets 503 database_unavailable, not a 500. Once it is known
    to be this is a flag check on the event loop; before that, a blocking check in a thread
    (a plain `def` dependency would pay the thread hop on every request of the query path)."""
    if not context.schema_ready:
        await anyio.to_thread.run_sync(context.ensure_schema)


SchemaReady = Depends(check_schema)
