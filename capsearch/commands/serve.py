"""`capsearch serve`: the embedded mode in one process."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from shared.config import get_settings
from shared.logging import configure_logging

log = logging.getLogger("capsearch.serve")


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def keys_required(host: str, enabled: bool | None) -> bool:
    """Keys are off by default on loopback; anywhere else they are required, always."""
    if host in LOOPBACK:
        return enabled is True
    if enabled is False:
        raise ValueError(f"refusing to serve without API keys on {host}: without keys the "
                         "embedded mode binds 127.0.0.1 only")
    return True


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

    require_keys = keys_required(settings.host, settings.auth.enabled)
    stack = build_embedded(settings)
    try:
        if require_keys:
            log.info("API keys required (create one: capsearch keys create --data-dir ...)")
        else:
            log.warning("embedded mode WITHOUT API keys: bound to %s only, so only this "
                        "machine can reach it", settings.host)
        log.info("serving on http://%s:%d (API docs at /docs)", settings.host,
                 settings.gateway_port)
        uvicorn.run(stack.gateway_app(require_keys=require_keys), host=settings.host,
                    port=settings.gateway_port, log_level=settings.log_level.lower())
    finally:
        stack.close()
    return 0
