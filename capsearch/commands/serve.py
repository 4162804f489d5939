"""`capsearch serve`: the embedded mode in one process."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from shared.config import get_settings
from shared.logging import configure_logging

log = logging.getLogger("capsearch.serve")


def run(args: argparse.Namespace) -> int:
    updates: dict[str, object] = {}
    if args.data_dir:
        updates["data_dir"] = args.data_dir.resolve()
    if args.host:
        updates["host"] = args.host
    if args.port:
        updates["gateway_port"] = args.port
    settings = get_settings().model_copy(update=updates)
    configure_logging(settings.log_level, json_logs=settings.log_json)

    from capsearch.embedded import build_embedded

    stack = build_embedded(settings)
    try:
        if settings.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("embedded mode has no authentication and is listening on %s",
                        settings.host)
        log.info("serving on http://%s:%d (API docs at /docs)", settings.host,
                 settings.gateway_port)
        uvicorn.run(stack.gateway_app(), host=settings.host, port=settings.gateway_port,
                    log_level=settings.log_level.lower())
    finally:
        stack.close()
    return 0
