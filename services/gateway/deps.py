"""The gateway's dependencies: its context (what lifespan builds), sessions, fetch-or-404, auth."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Path, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from services.gateway.querycache import CachedTextEncoder, cache_entries
from services.gateway.readiness import SchemaGate
from services.gateway.search import SearchQuery, validate_search_query
from shared.celery_app import make_celery
from shared.clients import (
    AsyncHttpEncoderClient,
    AsyncIndexClient,
    AsyncTextEncoderClient,
)
from shared.config import Settings
from shared.db import ImageRecord, make_engine, make_session_factory
from shared.errors import Forbidden, NotFound, Unauthorized
from shared.queue import CaptionQueue, CeleryCaptionQueue
from shared.shards import make_async_index_client
from shared.storage import BlobStore, make_blob_store

log = logging.getLogger(__name__)

Scope = Literal["search", "write", "admin"]
ALL_SCOPES: frozenset[str] = frozenset({"search", "write", "admin"})


@dataclass
class GatewayContext:
    """Everything the gateway talks to; built once per process (or handed in by embedded mode)."""

    settings: Settings
    session_factory: sessionmaker[Session]
    store: BlobStore
    encoder: AsyncTextEncoderClient
    index: AsyncIndexClient
    queue: CaptionQueue
    # checks the schema once the database answers (None: the caller migrated it already)
    schema: SchemaGate | None = None


def build_context(settings: Settings) -> GatewayContext:
    """The production context: database, blob store, HTTP clients of encoder/search, Celery.

    Connects to nothing: the gateway starts while Postgres or S3 is down and answers 503
    until they are back (the schema is checked and the bucket created on first contact).
    """
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    timeout = settings.http_timeout_s
    token = settings.service_token.get_secret_value() or None
    return GatewayContext(
        settings=settings,
        session_factory=make_session_factory(engine),
        store=make_blob_store(settings, require=False),
        # repeated queries skip the encoder (a bounded LRU of query vectors per model)
        encoder=CachedTextEncoder(
            AsyncHttpEncoderClient(settings.encoder_url, timeout=timeout, service_token=token),
            model=settings.embedding_model, max_entries=cache_entries()),
        index=make_async_index_client(settings, service_token=token),  # one per shard
        queue=CeleryCaptionQueue(make_celery(settings), settings.caption_batch_size),
        schema=SchemaGate(engine),
    )


async def close_context(context: GatewayContext) -> None:
    """Close the HTTP clients and dispose the engine of a context built by `build_context`."""
    for client in (context.encoder, context.index):
        aclose = getattr(client, "aclose", None)
        if aclose is not None:
            await aclose()
    engine = context.session_factory.kw.get("bind")
    if engine is not None:
        engine.dispose()


# ---- context, settings, sessions -------------------------------------------------------------


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
    if context.schema is not None:
        context.schema.ensure()  # 503 database_unavailable until Postgres answers
    with context.session_factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


# ids are 64-bit in Postgres; a bigger one would be a driver error (500) instead of a 422
MAX_ID = 2**63 - 1
ImageId = Annotated[int, Path(ge=1, le=MAX_ID, description="the image's id")]


def get_image(image_id: ImageId, session: SessionDep) -> ImageRecord:
    """The image named by the path, or 404."""
    image = session.get(ImageRecord, image_id)
    if image is None:
        raise NotFound(f"image {image_id} not found")
    return image


ImageDep = Annotated[ImageRecord, Depends(get_image)]


async def get_search_query(
    settings: SettingsDep,
    q: Annotated[str, Query(description="what to look for, in words")],
    k: Annotated[int | None, Query(ge=1, description="how many results")] = None,
    min_score: Annotated[float, Query(ge=-1.0, le=1.0, description="drop weaker hits")] = -1.0,
    nprobe: Annotated[int | None, Query(ge=1, le=1_000_000, description="clusters to scan")
                      ] = None,
) -> SearchQuery:
    return validate_search_query(settings=settings, q=q, k=k, min_score=min_score,
                                 nprobe=nprobe)


SearchQueryDep = Annotated[SearchQuery, Depends(get_search_query)]


# ---- auth: services.gateway.auth resolves the caller; routes declare the scope they need -----


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may do; `bucket` names their rate-limit bucket."""

    name: str
    scopes: frozenset[str]
    bucket: str | None = None


# the caller when keys are off (embedded mode on loopback): limited per client address
ANONYMOUS = Principal(name="anonymous", scopes=ALL_SCOPES)

# declared so the OpenAPI document (and /docs' Authorize button) shows how to send a key;
# the key itself is checked by AuthMiddleware before the route runs
bearer_scheme = HTTPBearer(auto_error=False, description="an API key: `Bearer csk_...`")
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="an API key, as an alternative to Bearer")


async def get_principal(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
    _api_key: Annotated[str | None, Security(api_key_scheme)] = None,
) -> Principal:
    """The caller AuthMiddleware authenticated (no middleware, no caller: 401)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise Unauthorized("an API key is required")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_scope(scope: Scope) -> Callable[..., object]:
    """A dependency that refuses principals lacking `scope` (403)."""

    async def _require(principal: PrincipalDep) -> Principal:
        if scope not in principal.scopes:
            raise Forbidden(f"{principal.name} lacks the {scope!r} scope")
        return principal

    _require.__name__ = f"require_{scope}"
    return _require
