"""The gateway app: the public /v1 REST API and the web UI in front of the database, the blobs,
the encoder and the search service. Wiring only: middleware, routers, lifespan
(docs/architecture.md walks through the rest)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import APIRouter, FastAPI

from services.gateway.api import duplicates, health, images, imports, index, search, similar
from services.gateway.core.auth import AuthMiddleware, body_scopes, page_patterns
from services.gateway.core.background import sweep_forever, warm_up
from services.gateway.core.body_limit import BodySizeLimit, body_caps, body_limit
from services.gateway.core.context import GatewayContext, build_context, close_context
from services.gateway.core.metrics import gateway_collector
from services.gateway.core.origin import OriginGuard, allowed_hosts
from services.gateway.core.ratelimit import make_rate_limiter
from services.gateway.core.sessions import make_session_cookies
from services.gateway.ui import docs, pages, signin
from services.gateway.ui import duplicates as duplicate_pages
from shared.config import Settings, get_settings
from shared.metrics import install_metrics
from shared.queue import CeleryCaptionQueue
from shared.web import install_error_handlers, install_request_context

log = logging.getLogger(__name__)

# every router but the upload route's (mounted apart, with the form limits of the settings)
ROUTERS: tuple[APIRouter, ...] = (images.router, search.router, similar.router, imports.router,
                                  index.router, health.router, duplicates.router, pages.router,
                                  duplicate_pages.router, signin.router)


def create_app(settings: Settings | None = None, context: GatewayContext | None = None
               ) -> FastAPI:
    """The gateway. With a context (embedded mode) the caller owns and closes it; without one,
    the lifespan builds it from the settings and closes it at shutdown. A context's settings win.
    """
    if context is not None:
        settings = context.settings
    settings = settings or get_settings()
    limiter = make_rate_limiter(settings)
    auth_enabled = settings.auth.enabled is not False

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not auth_enabled:
            log.warning("API keys are OFF: every caller may upload, delete and search")
        if context is not None:
            try:
                yield
            finally:
                if limiter is not None:
                    await limiter.aclose()
            return
        built = await anyio.to_thread.run_sync(build_context, settings)
        app.state.context = built
        log.info("gateway up: encoder %s, search %s", settings.encoder_url, settings.search_url)
        try:
            async with anyio.create_task_group() as background:
                background.start_soon(warm_up, built)
                if (isinstance(built.queue, CeleryCaptionQueue)
                        and settings.requeue_interval_s > 0):
                    background.start_soon(sweep_forever, built)
                try:
                    yield
                finally:
                    background.cancel_scope.cancel()
        finally:
            if limiter is not None:
                await limiter.aclose()
            await close_context(built)

    # /docs is ours (Swagger UI from local files, ui/docs.py); no /redoc (a CDN script)
    app = FastAPI(title="capsearch", version="0.1.0", lifespan=lifespan,
                  summary="Natural-language search over uncaptioned photos",
                  docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json" if settings.api_docs else None)
    if context is not None:
        app.state.context = context
    # with keys on, browsers sign in at /sign-in and hold a signed session cookie
    app.state.sessions = make_session_cookies(settings) if auth_enabled else None
    install_error_handlers(app)
    routers = (images.upload_router, *ROUTERS)
    # each route's own body cap (the small JSON one unless it declares more), before reading
    app.add_middleware(BodySizeLimit, default=body_limit("json", settings),
                       caps=body_caps(routers, settings))
    # before routing and body parsing: a stranger's upload is refused before it is read
    app.add_middleware(AuthMiddleware, enabled=auth_enabled, cache_s=settings.auth.cache_s,
                       limiter=limiter, body_scopes=body_scopes(routers),
                       sessions=app.state.sessions,
                       pages=page_patterns([pages.router, duplicate_pages.router]),
                       metrics_token=settings.metrics_token.get_secret_value())
    # hosts not served here and cross-site writes are refused before anything else runs
    app.add_middleware(OriginGuard, hosts=allowed_hosts(settings))
    install_request_context(app)  # outermost: even a refused body gets a request id
    app.include_router(images.upload_router,
                       form_limits={"max_files": settings.max_files_per_request,
                                    "max_fields": 16})
    for router in ROUTERS:
        app.include_router(router)
    if settings.api_docs:
        docs.mount_docs(app)  # before /static, which would shadow its assets
    pages.mount_static(app)
    install_metrics(app, "gateway", collect=gateway_collector(app))
    return app
