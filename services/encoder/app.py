"""The encoder service: FastAPI app whose lifespan loads the model and owns the inference pool."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.encoder.batching import MicroBatcher
from services.encoder.encoder import TextEncoder, build_text_encoder
from services.encoder.routes import router
from shared.config import Settings, get_settings
from shared.devices import cpu_streams, set_torch_threads
from shared.metrics import install_metrics
from shared.web import install_error_handlers, install_request_context, install_service_token

log = logging.getLogger(__name__)


def service_threads(settings: Settings) -> int:
    """Intra-op threads of the service's one inference thread (ONNX Runtime's or torch's):
    `torch_threads` when set, else half the cores it may use (a container's CPU quota
    included, not the node's cores). The gateway, the search service and Postgres share the
    host; with every core (torch's default) one busy core makes OpenMP spin-wait: measured on
    2 shared cores, 63 ms of CPU per query with 2 threads against 11 ms with 1."""
    if settings.torch_threads:
        return settings.torch_threads
    return max(1, cpu_streams() // 2)


def create_app(settings: Settings | None = None, encoder: TextEncoder | None = None) -> FastAPI:
    """The encoder app; a test injects a (tiny) encoder, production builds one from settings."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if encoder is None:
            set_torch_threads(service_threads(settings))
        model = encoder or build_text_encoder(settings, threads=service_threads(settings))
        # one inference thread: the runtime spreads one forward pass over its intra-op
        # threads (service_threads), so a second concurrent pass would only fight it
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        app.state.encoder = model
        app.state.pool = pool
        # load in the background so /healthz answers while the weights load; /readyz waits
        app.state.loading = asyncio.get_running_loop().run_in_executor(pool, model.load)
        app.state.loading.add_done_callback(_log_load_failure)
        app.state.batcher = MicroBatcher(model.encode, pool, max_batch=settings.encoder_batch_size,
                                         wait_ms=settings.encoder_batch_wait_ms)
        try:
            yield
        finally:
            await app.state.batcher.stop()
            pool.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(title="capsearch encoder", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    install_service_token(app, settings)
    install_request_context(app)
    app.include_router(router)
    install_metrics(app, "encoder")
    return app


def _log_load_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("text encoder failed to load: %s", future.exception())
