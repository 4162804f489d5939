#!/usr/bin/env python
"""Container health check for the capsearch image: one script for all four roles.

Usage: ``capsearch-healthcheck [gateway|encoder|search|caption] [--live]``.
Without a role it reads the role from PID 1's command line (``tini -- python -m services.X``),
so the image's single HEALTHCHECK serves every service. HTTP services are asked ``/readyz``
(``/healthz`` with ``--live``) on the port their settings give; the caption worker answers a
Celery ping addressed to a node on this host.
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

HTTP_ROLES = {"gateway": "gateway_port", "encoder": "encoder_port", "search": "search_port"}
ROLES = (*HTTP_ROLES, "caption")


def role_from_cmdline(argv: Sequence[str]) -> str | None:
    """The service a command line runs: ``... -m services.<role> ...`` -> ``<role>``."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m" and argv[i + 1].startswith("services."):
            role = argv[i + 1].split(".")[1]
            return role if role in ROLES else None
    return None


def pid1_argv() -> list[str]:
    raw = Path("/proc/1/cmdline").read_bytes()
    return [part.decode() for part in raw.split(b"\0") if part]


def probe_url(role: str, *, live: bool, host: str, port: int) -> str:
    """The URL to probe: a wildcard bind address is reached through loopback."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/{'healthz' if live else 'readyz'}"


def check_http(role: str, *, live: bool) -> int:
    from shared.config import Settings

    settings = Settings()
    url = probe_url(role, live=live, host=settings.host, port=getattr(settings, HTTP_ROLES[role]))
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        sys.stderr.write(f"{url}: {exc}\n")
        return 1


# services.caption names its node caption@<hostname>
WORKER_NODE_PREFIX = "caption"


def answered(replies: Sequence[dict[str, object]], hostname: str) -> bool:
    """Whether a Celery ping reply came from a worker node on this host."""
    return any(name.endswith(f"@{hostname}") for reply in replies for name in reply)


def check_worker() -> int:
    from shared.celery_app import make_celery

    app = make_celery()
    host = socket.gethostname()
    # addressed ping: returns as soon as our node answers
    replies = app.control.ping(destination=[f"{WORKER_NODE_PREFIX}@{host}"], timeout=5.0)
    if not replies:
        # a node named otherwise (e.g. --hostname passed to the worker): ask every node
        replies = app.control.ping(timeout=5.0)
    if answered(replies or [], host):
        return 0
    sys.stderr.write(f"no Celery worker on {host} answered a ping\n")
    return 1


def main(argv: Sequence[str]) -> int:
    live = "--live" in argv
    args = [a for a in argv if a != "--live"]
    role = args[0] if args else role_from_cmdline(pid1_argv())
    if role not in ROLES:
        sys.stderr.write(f"unknown role {role!r}; expected one of {', '.join(ROLES)}\n")
        return 2
    return check_worker() if role == "caption" else check_http(role, live=live)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
