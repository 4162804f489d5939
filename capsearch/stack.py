"""The local stack: each service its own process against the Postgres, Redis and S3 that the
settings name. Used by `capsearch stack up|down` and by the integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from capsearch.deps.processes import DepsError, is_running
from capsearch.deps.processes import record as process_record
from shared.config import Settings
from shared.stackstate import ProcessRecord

# start order matters only for readiness: the worker and gateway call encoder and search
SERVICE_MODULES: dict[str, str] = {
    "encoder": "services.encoder",
    "search": "services.search",
    "gateway": "services.gateway",
    "caption": "services.caption",
}


def ready_url(name: str, settings: Settings) -> str | None:
    """The readiness URL of an HTTP service (the caption worker has none)."""
    base = {"encoder": settings.encoder_url, "search": settings.search_url,
            "gateway": settings.url}.get(name)
    return f"{base.rstrip('/')}/readyz" if base else None


@dataclass
class ServiceProcess:
    name: str
    pid: int
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    # when the OS created it: with the pid, what tells this process from a later one that
    # reuses the pid (a detached service is stopped only if both match)
    started: float | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        if self.started is not None:
            return is_running(self.record())
        try:
            os.kill(self.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def signal(self, sig: int) -> None:
        if self.popen is None and not self.alive():
            return  # gone, or its pid is another program's now
        try:
            os.killpg(self.pid, sig)  # each service leads its own process group
        except ProcessLookupError:
            pass

    def record(self) -> ProcessRecord:
        return ProcessRecord(pid=self.pid, started=self.started or 0.0, log=str(self.log_path))

    @classmethod
    def from_record(cls, name: str, rec: ProcessRecord) -> ServiceProcess:
        return cls(name=name, pid=rec.pid, log_path=Path(rec.log), started=rec.started)


def start_service(name: str, env: dict[str, str], log_dir: Path) -> ServiceProcess:
    """Spawn one service (`python -m services.<name>`) with its output in log_dir/<name>.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = log_path.open("ab")
    popen = subprocess.Popen(
        [sys.executable, "-m", SERVICE_MODULES[name]],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    try:
        started: float | None = process_record(popen.pid, log_path).started
    except DepsError:
        started = None  # exited at once: wait_ready says so, with the log
    return ServiceProcess(name=name, pid=popen.pid, log_path=log_path, popen=popen,
                          started=started)


def wait_ready(proc: ServiceProcess, url: str | None, timeout: float) -> None:
    """Block until the service answers 200 on its readiness URL (or, without one, stays up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            tail = proc.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{proc.name} exited during start-up; log tail:\n{tail}")
        if url is None:
            time.sleep(2.0)
            if proc.alive():
                return
            continue
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{proc.name} not ready at {url} after {timeout:.0f}s")


def start_stack(settings: Settings, env: dict[str, str], log_dir: Path,
                names: list[str] | None = None, timeout: float = 180.0) -> list[ServiceProcess]:
    """Start the named services (all by default) and wait until each is ready."""
    procs: list[ServiceProcess] = []
    try:
        for name in names or list(SERVICE_MODULES):
            proc = start_service(name, env, log_dir)
            procs.append(proc)
        for proc in procs:
            wait_ready(proc, ready_url(proc.name, settings), timeout)
    except BaseException:
        stop_stack(procs)
        raise
    return procs


def stop_stack(procs: list[ServiceProcess], timeout: float = 20.0) -> None:
    """SIGTERM every service, then SIGKILL what is still alive after `timeout`."""
    for proc in procs:
        proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        while proc.alive() and time.monotonic() < deadline:
            if proc.popen is not None:
                try:
                    proc.popen.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.2)
        if proc.alive():
            proc.signal(signal.SIGKILL)
            if proc.popen is not None:
                proc.popen.wait(timeout=10)
