"""The gateway app: the public /v1 REST API in front of the database, blobs, encoder and search."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from services.gateway.auth import AuthMiddleware
from services.gateway.deps import GatewayContext, build_context, close_context
from services.gateway.discovery_routes import router as discovery_router
from services.gateway.limits import BodySizeLimit
from services.gateway.observability import gateway_collector
from services.gateway.ratelimit import make_rate_limiter
from services.gateway.routes import health_router, router, upload_router
from services.gateway.sweeper import sweep_forever, warm_up
from services.gateway.ui import mount_static
from services.gateway.ui import router as ui_router
from shared.config import Settings, get_settings
from shared.metrics import install_metrics
from shared.queue import CeleryCaptionQueue
from shared.web import install_error_handlers, install_request_context

log = logging.getLogger(__name__)

# multipart framing per file part (headers, boundary) and the small form fields
PART_OVERHEAD_BYTES = 16 * 1024
FORM_OVERHEAD_BYTES = 64 * 1024


def upload_body_limit(settings: Settings) -> int:
    """The largest request body POST /v1/images accepts: every file at its cap, plus framing."""
    per_file = settings.max_upload_bytes + PART_OVERHEAD_BYTES
    return settings.max_files_per_request * per_file + FORM_OVERHEAD_BYTES


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

    app = FastAPI(title="capsearch", version="0.1.0", lifespan=lifespan,
                  summary="Natural-language search over uncaptioned photos",
                  docs_url="/docs", openapi_url="/openapi.json")
    if context is not None:
        app.state.context = context
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, limit=upload_body_limit(settings))
    # before routing and body parsing: a stranger's upload is refused before it is read
    app.add_middleware(AuthMiddleware, enabled=auth_enabled, cache_s=settings.auth.cache_s,
                       limiter=limiter)
    install_request_context(app)  # outermost: even a refused body gets a request id
    app.include_router(upload_router, form_limits={"max_files": settings.max_files_per_request,
                                                   "max_fields": 16})
    app.include_router(router)
    app.include_router(health_router)
    app.include_router(discovery_router)
    app.include_router(ui_router)  # the web UI at /
    mount_static(app)
    install_metrics(app, "gateway", collect=gateway_collector(app))
    return app
