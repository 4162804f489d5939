"""The search service's FastAPI app: the index in memory, loaded from the database at start-up."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine

from services.search.deps import BlockingWork
from services.search.metrics import index_collector
from services.search.routes import dup_router, router
from services.search.service import IndexService
from shared.config import Settings, get_settings
from shared.db import EmbeddingKind, make_engine, make_session_factory
from shared.db.migrate import require_current
from shared.duplicates import duplicate_vector_model
from shared.metrics import install_metrics
from shared.web import install_error_handlers, install_request_context, install_service_token

log = logging.getLogger(__name__)

_RETRY_MAX_S = 30.0


class BackgroundLoop:
    """A daemon thread running `_run` until `stop()` (which waits for it, 5 s at most)."""

    name = "background"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        raise NotImplementedError


class IndexLoader(BackgroundLoop):
    """Loads the index in a background thread, retrying while the database is not up yet.

    Liveness (`/healthz`) answers at once; readiness (`/readyz`) waits for the load.
    """

    name = "index-loader"

    def __init__(self, app: FastAPI, engine: Engine | None) -> None:
        super().__init__()
        self._app = app
        self._engine = engine

    def _run(self) -> None:
        services: list[IndexService] = [self._app.state.service]
        if self._app.state.dup_service is not None:
            services.append(self._app.state.dup_service)
        delay = 0.5
        while not self._stop.is_set():
            try:
                if self._engine is not None:
                    require_current(self._engine)  # `capsearch db upgrade` migrates
                for service in services:
                    if not service.loaded:
                        service.load()
                self._app.state.load_error = None
                # what is loaded now lives on: keep the cyclic collector from re-scanning it,
                # which otherwise stalls a query for milliseconds now and then (the p99)
                gc.freeze()
                return
            except Exception as exc:
                self._app.state.load_error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("loading the index failed (retrying in %.1f s): %s", delay, exc)
            self._stop.wait(delay)
            delay = min(delay * 2, _RETRY_MAX_S)


class VersionSync(BackgroundLoop):
    """Every `index.reload_interval_s`: reload when another replica activated a new version,
    else take in the vectors other replicas indexed (`IndexService.follow`), and (with
    `index.auto_rebuild`) start a rebuild once one is due."""

    name = "index-sync"

    def __init__(self, service: IndexService, interval_s: float) -> None:
        super().__init__()
        self._service = service
        self._interval_s = interval_s

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            if not self._service.loaded:
                continue
            try:
                if not self._service.sync_version():
                    self._service.follow()  # what other replicas of this shard indexed
                self._service.maybe_auto_rebuild()
            except Exception as exc:  # the database may be briefly away: try next time
                log.warning("index version sync failed: %s", exc)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine: Engine | None = None
    if app.state.service is None:
        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.sqlalchemy_url)
        factory = make_session_factory(engine)
        app.state.service = IndexService(settings, factory)
        if settings.duplicates:  # the near-duplicate vectors' own index: an upload's nearest
            app.state.dup_service = IndexService(settings, factory, kind=EmbeddingKind.dup,
                                                 model=duplicate_vector_model(settings))
    app.state.work = BlockingWork()
    services = [s for s in (app.state.service, app.state.dup_service) if s is not None]
    loader = IndexLoader(app, engine) if not all(s.loaded for s in services) else None
    if loader is not None:
        loader.start()
    syncs = [VersionSync(s, settings.index.reload_interval_s) for s in services]
    for sync in syncs:
        sync.start()
    try:
        yield
    finally:
        for sync in syncs:
            sync.stop()
        if loader is not None:
            loader.stop()
        app.state.work.shutdown()
        if engine is not None:
            engine.dispose()


def create_app(settings: Settings | None = None, service: IndexService | None = None,
               dup_service: IndexService | None = None) -> FastAPI:
    """The search service; pass a service (loaded or not) to skip building one from settings
    (and the near-duplicate index's, else its routes answer 503)."""
    app = FastAPI(title="capsearch search", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings or get_settings()
    app.state.service = service
    app.state.dup_service = dup_service
    app.state.load_error = None
    install_error_handlers(app)
    install_service_token(app, app.state.settings)
    install_request_context(app)
    app.include_router(router)
    app.include_router(dup_router)
    install_metrics(app, "search", collect=index_collector(app))
    return app
