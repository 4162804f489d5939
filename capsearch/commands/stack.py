"""`capsearch stack up|down|status`: each service as its own process, optionally with its
dependencies started from wheels (`--with-deps`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sqlalchemy import make_url
from sqlalchemy.exc import OperationalError

from capsearch.commands.deps import data_dir_of, describe
from capsearch.deps import running_deps, start_deps, stop_deps
from capsearch.deps.processes import free_port, new_secret
from capsearch.stack import ServiceProcess, start_stack, stop_stack
from shared.config import Settings
from shared.db import make_engine
from shared.db.migrate import upgrade
from shared.errors import DatabaseUnavailable
from shared.stackstate import (
    LOOPBACK,
    STACK_FILE,
    StackState,
    read_deps,
    read_stack,
    write_private,
)


def _recorded(data_dir: Path) -> tuple[StackState | None, list[ServiceProcess]]:
    stack = read_stack(data_dir)
    if stack is None:
        return None, []
    return stack, [ServiceProcess.from_record(name, rec) for name, rec in stack.services.items()]


def migrate(settings: Settings) -> None:
    """The stack's database at the head revision before any service starts."""
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        upgrade(engine)
    except OperationalError as exc:  # not up: say so in one line, and how to start it
        url = make_url(settings.sqlalchemy_url).render_as_string(hide_password=True)
        raise DatabaseUnavailable(
            f"cannot reach the stack's database {url} to migrate it: start it first (or "
            f"`capsearch stack up --with-deps` for one of its own)") from exc
    finally:
        engine.dispose()


def service_layout(settings: Settings, args: argparse.Namespace) -> StackState:
    """Ports and service token of the stack about to start (its processes come later).

    With its own dependencies the stack is self-contained: encoder, search and the worker's
    metrics on free ports, a fresh service token unless one is set. Otherwise the settings'.
    """
    gateway = args.port or settings.gateway_port
    token = settings.service_token.get_secret_value()
    if not args.with_deps:
        return StackState(services={}, gateway_port=gateway, encoder_port=settings.encoder_port,
                          search_port=settings.search_port,
                          worker_metrics_port=settings.worker_metrics_port,
                          service_token=token)
    return StackState(services={}, gateway_port=gateway, encoder_port=free_port(),
                      search_port=free_port(), worker_metrics_port=free_port(),
                      service_token=token or new_secret(), with_deps=True)


def service_env(data_dir: Path, layout: StackState) -> dict[str, str]:
    """What every service process gets: this environment, the data dir (the dependencies come
    from its record through the settings) and the stack's layout."""
    env = dict(os.environ)
    env["CAPSEARCH_DATA_DIR"] = str(data_dir)
    env.setdefault("CAPSEARCH_QUEUE_BACKEND", "celery")
    for name, value in layout.settings().items():
        if value is not None and name != "queue_backend":
            env[f"CAPSEARCH_{name.upper()}"] = str(value)
    if layout.worker_metrics_port is None:
        env.pop("CAPSEARCH_WORKER_METRICS_PORT", None)
    return env


def up(args: argparse.Namespace, data_dir: Path) -> int:
    _, recorded = _recorded(data_dir)
    if any(p.alive() for p in recorded):
        print("stack: already running (capsearch stack down first)")
        return 1
    started_deps: list[str] = []
    if args.with_deps:
        deps, started_deps = start_deps(data_dir)
        for line in describe(deps, running_deps(data_dir)):
            print(f"deps: {line}")
    try:
        settings = Settings(data_dir=data_dir)  # the dependencies' record, under the env
        migrate(settings)
        layout = service_layout(settings, args)
        env = service_env(data_dir, layout)
        urls = {k: v for k, v in layout.settings().items() if k.endswith("url")}
        procs = start_stack(settings.model_copy(update=urls), env, data_dir / "stack",
                            timeout=args.timeout)
    except BaseException:
        if started_deps:
            stop_deps(data_dir, started_deps)
        raise
    services = {p.name: p.record() for p in procs}
    write_private(data_dir / STACK_FILE, layout.model_copy(update={"services": services}))
    for p in procs:
        p.popen = None  # detached: they outlive this command
    print(f"stack: up — gateway http://{LOOPBACK}:{layout.gateway_port}, logs in "
          f"{data_dir / 'stack'}")
    if args.with_deps:
        print(f"stack: other commands find it with CAPSEARCH_DATA_DIR={data_dir}")
    return 0


def down(data_dir: Path) -> int:
    stack, recorded = _recorded(data_dir)
    running = [p for p in recorded if p.alive()]
    stop_stack(running)
    (data_dir / STACK_FILE).unlink(missing_ok=True)
    print(f"stack: stopped {len(running)} services")
    if stack is not None and stack.with_deps:
        stopped = stop_deps(data_dir)
        print(f"stack: stopped {', '.join(stopped) or 'no dependencies (none running)'}")
    return 0


def status(data_dir: Path) -> int:
    _, recorded = _recorded(data_dir)
    running = [p for p in recorded if p.alive()]
    if not running:
        print("stack: not running")
    for p in running:
        print(f"{p.name:8s} pid {p.pid}  log {p.log_path}")
    deps = read_deps(data_dir)
    if deps is not None:
        for line in describe(deps, running_deps(data_dir)):
            print(f"deps: {line}")
    return 0


def run(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    if args.action == "status":
        return status(data_dir)
    if args.action == "down":
        return down(data_dir)
    return up(args, data_dir)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("stack", help="run each service as its own process (local stack)")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--with-deps", action="store_true",
                   help="also start PostgreSQL, Redis and S3 from wheels under the data dir "
                        "(`stack down` stops them too)")
    p.add_argument("--data-dir", type=Path, help="where the stack keeps its state, logs and "
                   "dependencies (default: CAPSEARCH_DATA_DIR, else ~/.capsearch)")
    p.add_argument("--port", type=int, default=None, help="the gateway's port (default 8000)")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    p.set_defaults(func=run)
