"""The gateway app: the public /v1 REST API in front of the database, blobs, encoder and search."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from services.gateway.deps import GatewayContext, build_context, close_context
from services.gateway.limits import BodySizeLimit
from services.gateway.routes import health_router, router, upload_router
from shared.config import Settings, get_settings
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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if context is not None:
            yield
            return
        built = await anyio.to_thread.run_sync(build_context, settings)
        app.state.context = built
        log.info("gateway ready: encoder %s, search %s", settings.encoder_url,
                 settings.search_url)
        try:
            yield
        finally:
            await close_context(built)

    app = FastAPI(title="capsearch", version="0.1.0", lifespan=lifespan,
                  summary="Natural-language search over uncaptioned photos",
                  docs_url="/docs", openapi_url="/openapi.json")
    if context is not None:
        app.state.context = context
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, limit=upload_body_limit(settings))
    install_request_context(app)  # outermost: even a refused body gets a request id
    app.include_router(upload_router, form_limits={"max_files": settings.max_files_per_request,
                                                   "max_fields": 16})
    app.include_router(router)
    app.include_router(health_router)
    return app
