"""What a local stack started under its data dir, written down so other commands find it.

`capsearch deps up` / `capsearch stack up --with-deps` start PostgreSQL, Redis and an S3
server under `<data dir>/deps/` and record them in `deps/deps.json`; `capsearch stack up`
records its four service processes in `stack/stack.json`. Both files hold credentials: they
are written for the owner only (0600). Settings read them as a source below the environment
(shared/config.py): with `CAPSEARCH_DATA_DIR` pointing at such a data dir, a command reaches
that stack's database, broker, blob store and gateway with no other setting, and an explicit
`CAPSEARCH_*` variable still wins.

`deps.json` outlives `capsearch deps down` (its processes cleared): the database stays in the
data dir with its password, and the next `up` brings it back, on the same ports when free.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

LOOPBACK = "127.0.0.1"
DEPS_FILE = Path("deps") / "deps.json"
STACK_FILE = Path("stack") / "stack.json"
_State = TypeVar("_State", bound=BaseModel)


class ProcessRecord(BaseModel):
    """A process a stack started: its pid and start time (together, that very process: a pid
    the system reused for another program is not ours), and its log."""

    pid: int
    started: float  # seconds since the epoch, as the OS reports the process's creation
    log: str


class PostgresState(BaseModel):
    port: int
    password: str
    database: str = "capsearch"
    process: ProcessRecord | None = None

    def url(self, database: str | None = None) -> str:
        return (f"postgresql+psycopg2://postgres:{self.password}@{LOOPBACK}:{self.port}/"
                f"{database or self.database}")


class RedisState(BaseModel):
    port: int
    password: str
    process: ProcessRecord | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@{LOOPBACK}:{self.port}/{db}"


class S3State(BaseModel):
    port: int  # the S3 API; weed's other servers take the ports below
    internal_ports: list[int]
    access_key: str
    secret_key: str
    process: ProcessRecord | None = None

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.port}"


class DepsState(BaseModel):
    """The database, broker and blob store of a data dir (each None until first started)."""

    postgres: PostgresState | None = None
    redis: RedisState | None = None
    s3: S3State | None = None

    def settings(self) -> dict[str, Any]:
        """The settings that point a capsearch process at these dependencies."""
        values: dict[str, Any] = {}
        if self.postgres is not None:
            values["database_url"] = self.postgres.url()
        if self.redis is not None:
            values["broker_url"] = self.redis.url()
        if self.s3 is not None:
            values["blob_backend"] = "s3"
            values["s3"] = {"endpoint": self.s3.endpoint, "access_key": self.s3.access_key,
                            "secret_key": self.s3.secret_key, "secure": False}
        return values


class StackState(BaseModel):
    """The four service processes of `capsearch stack up` and where they listen."""

    services: dict[str, ProcessRecord]
    gateway_port: int
    encoder_port: int
    search_port: int
    worker_metrics_port: int | None = None
    service_token: str = ""
    with_deps: bool = False  # `stack down` stops the dependencies too

    def settings(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "queue_backend": "celery",
            "gateway_port": self.gateway_port,
            "encoder_port": self.encoder_port,
            "search_port": self.search_port,
            "url": f"http://{LOOPBACK}:{self.gateway_port}",
            "encoder_url": f"http://{LOOPBACK}:{self.encoder_port}",
            "search_url": f"http://{LOOPBACK}:{self.search_port}",
            "worker_metrics_port": self.worker_metrics_port,
        }
        if self.service_token:
            values["service_token"] = self.service_token
        return values


def _read(path: Path, model: type[_State]) -> _State | None:
    if not path.is_file():
        return None
    try:
        return model.model_validate_json(path.read_text())
    except ValueError as exc:  # pydantic's ValidationError is one
        raise ValueError(f"{path} is not a capsearch stack record ({exc.__class__.__name__}); "
                         "stop what it started by hand, then remove it") from None


def read_deps(data_dir: Path) -> DepsState | None:
    return _read(data_dir / DEPS_FILE, DepsState)


def read_stack(data_dir: Path) -> StackState | None:
    return _read(data_dir / STACK_FILE, StackState)


def write_private(path: Path, state: BaseModel) -> None:
    """Write `state` as JSON readable by its owner only, atomically (rename over the old)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(state.model_dump_json(indent=2))
    os.replace(tmp, path)


def settings_from_state(data_dir: Path) -> dict[str, Any]:
    """The settings a data dir's recorded stack gives (empty when it has none)."""
    values: dict[str, Any] = {}
    deps = read_deps(data_dir)
    if deps is not None:
        values.update(deps.settings())
    stack = read_stack(data_dir)
    if stack is not None:
        values.update(stack.settings())
    return values
