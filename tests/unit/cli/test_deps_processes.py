"""A local stack's processes: known by pid and start time, stopped only when they are ours;
ports kept across restarts; who may reach PostgreSQL's files when capsearch runs as root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from capsearch.deps.postgres import blocked_directory
from capsearch.deps.processes import (
    free_port,
    is_running,
    port_is_free,
    record,
    stop_process,
)
from shared.stackstate import ProcessRecord


@pytest.fixture
def sleeper(tmp_path: Path):  # type: ignore[no-untyped-def]
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                            start_new_session=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_recorded_process_is_running_until_stopped(sleeper, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rec = record(sleeper.pid, tmp_path / "log")
    assert is_running(rec)
    assert stop_process(rec) is True
    assert sleeper.wait(5) is not None and not is_running(rec)
    assert stop_process(rec) is False  # stopping twice is a no-op


def test_a_reused_pid_is_not_ours(sleeper, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ours = record(sleeper.pid, tmp_path / "log")
    other = ProcessRecord(pid=sleeper.pid, started=ours.started - 3600, log="x")
    assert not is_running(other)
    assert stop_process(other) is False
    assert sleeper.poll() is None  # the process that now has the pid was left alone


def test_free_port_keeps_a_free_preferred_port() -> None:
    port = free_port()
    assert port_is_free(port) and free_port(port) == port
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        assert free_port(port) != port


def test_blocked_directory_finds_the_first_closed_folder(tmp_path: Path) -> None:
    import os

    closed = tmp_path / "closed"
    inner = closed / "inner"
    inner.mkdir(parents=True)
    me, my_group = os.getuid(), os.getgid()  # the owner's bits decide for the owner
    closed.chmod(0o600)
    try:
        assert blocked_directory(inner, me, my_group) == closed
        closed.chmod(0o700)
        assert blocked_directory(inner, me, my_group) is None
    finally:
        closed.chmod(0o755)


def test_a_bundled_file_is_found_in_its_wheel_or_named_with_the_install_hint() -> None:
    from capsearch.deps.processes import DepsError, bundled_file

    found = bundled_file("capsearch", "deps/processes.py", "the module", "pip install it")
    assert found.name == "processes.py" and found.is_file()
    with pytest.raises(DepsError, match="redis-server not installed: pip install x"):
        bundled_file("no_such_wheel_here", "bin/redis-server", "redis-server", "pip install x")
    with pytest.raises(DepsError, match="no PostgreSQL binaries at .*: reinstall, hint"):
        bundled_file("capsearch", "pginstall/bin/postgres", "PostgreSQL binaries", "hint")
