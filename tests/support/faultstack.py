"""A local stack built to be broken: its own database, its own redis-server, S3 and Postgres
reached by the gateway through cuttable proxies, and each service a process that can be
SIGKILLed and started again. Used by tests/integration/test_faults*.py and bench/reliability.py.

Nothing here touches the shared servers' state: the database and bucket are fresh and dropped
afterwards, the broker is a private redis-server.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, text

from capsearch.client import CapsearchClient
from capsearch.stack import ServiceProcess, ready_url, start_service, stop_stack, wait_ready
from shared.apikeys import create_key
from shared.config import Settings, settings_from_env
from shared.db import make_session_factory
from shared.db.migrate import upgrade
from tests.support.faults import RedisServer, TcpProxy, free_port
from tests.support.s3server import S3Server

SERVICE_TOKEN = "fault-stack-service-token-0123456789"
ORDER = ("encoder", "search", "gateway", "caption")


def same_ranking(before: list[tuple[int, float]], after: list[tuple[int, float]]) -> bool:
    """The same answer up to ties: the same scores in order, and the same ids above the last
    score (images with equal vectors, e.g. equal captions, may swap places at the cut-off)."""
    scores_before = [round(s, 4) for _, s in before]
    if scores_before != [round(s, 4) for _, s in after] or not before:
        return scores_before == [round(s, 4) for _, s in after]
    cutoff = scores_before[-1]
    above = {i for i, s in before if round(s, 4) > cutoff}
    return above == {i for i, s in after if round(s, 4) > cutoff}


@dataclass
class FaultStack:
    work_dir: Path
    database_url: str
    admin_url: str
    db_name: str
    redis: RedisServer
    pg_proxy: TcpProxy
    s3_proxy: TcpProxy
    s3: S3Server
    bucket: str
    env: dict[str, str]  # what encoder, search and the worker get (direct connections)
    gateway_env: dict[str, str]  # the gateway's: Postgres and S3 through the proxies
    engine: Engine
    api_key: str = ""
    procs: dict[str, ServiceProcess] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return settings_from_env(self.gateway_env)

    @property
    def url(self) -> str:
        return self.env["CAPSEARCH_URL"]

    @property
    def log_dir(self) -> Path:
        return self.work_dir / "logs"

    def client(self, timeout: float = 60.0) -> CapsearchClient:
        return CapsearchClient(self.url, api_key=self.api_key, timeout=timeout)

    # ---- processes -------------------------------------------------------------------------

    def start(self, name: str, *, wait: bool = True, timeout: float = 240.0) -> ServiceProcess:
        env = self.gateway_env if name == "gateway" else self.env
        proc = start_service(name, env, self.log_dir)
        self.procs[name] = proc
        if wait:
            wait_ready(proc, ready_url(name, self.settings), timeout)
            if name == "caption":
                self.wait_worker_ready(proc, timeout)
        return proc

    def wait_worker_ready(self, proc: ServiceProcess, timeout: float) -> None:
        """The worker is ready once Celery logs that it is consuming."""
        deadline = time.monotonic() + timeout
        start = proc.log_path.stat().st_size if proc.log_path.exists() else 0
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError("the caption worker exited during start-up")
            with proc.log_path.open("rb") as f:
                f.seek(start)
                if b"ready." in f.read():
                    return
            time.sleep(0.2)
        raise TimeoutError("the caption worker did not become ready")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        proc.signal(sig)
        if proc.popen is not None:
            proc.popen.wait(timeout=30)

    def restart(self, name: str, sig: int = signal.SIGKILL, **kw: object) -> ServiceProcess:
        self.kill(name, sig)
        return self.start(name, **kw)  # type: ignore[arg-type]

    def worker_log_since(self, offset: int) -> str:
        proc = self.procs.get("caption")
        path = proc.log_path if proc else self.log_dir / "caption.log"
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def worker_log_size(self) -> int:
        path = self.log_dir / "caption.log"
        return path.stat().st_size if path.exists() else 0

    # ---- state ---------------------------------------------------------------------------

    def scalar(self, sql: str, **params: object) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(sql), params).scalar_one())

    def statuses(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT status, count(*) FROM images GROUP BY status"))
            return {status: int(n) for status, n in rows}

    def object_keys(self) -> set[str]:
        from minio import Minio

        client = Minio(self.s3.endpoint, access_key=self.s3.access_key,
                       secret_key=self.s3.secret_key, secure=False)
        if not client.bucket_exists(self.bucket):
            return set()
        return {o.object_name for o in client.list_objects(self.bucket, recursive=True)}

    def index_stats(self) -> dict[str, object]:
        resp = httpx.get(f"{self.env['CAPSEARCH_SEARCH_URL']}/v1/index/stats",
                         headers={"X-Service-Token": SERVICE_TOKEN}, timeout=30)
        resp.raise_for_status()
        return dict(resp.json())

    def close(self) -> None:
        stop_stack(list(self.procs.values()))
        self.procs.clear()
        self.pg_proxy.stop()
        self.s3_proxy.stop()
        self.redis.stop()
        self.engine.dispose()
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
        admin.dispose()


def build_fault_stack(*, pg_admin_url: str, s3: S3Server, work_dir: Path,
                      extra_env: dict[str, str] | None = None,
                      services: tuple[str, ...] = ORDER) -> FaultStack:
    """Create the database, broker and proxies, mint an admin key, start the services."""
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    db_name = f"capsearch_fault_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db_name}"'))
    admin.dispose()
    base = pg_admin_url.rsplit("/", 1)[0]
    database_url = f"{base}/{db_name}"
    pg_host, pg_port = base.rsplit("@", 1)[-1].split(":")
    pg_proxy = TcpProxy(pg_host, int(pg_port)).start()
    s3_host, s3_port = s3.endpoint.split(":")
    s3_proxy = TcpProxy(s3_host, int(s3_port)).start()
    redis = RedisServer(work_dir / "redis").start()
    bucket = f"fault-{uuid.uuid4().hex[:8]}"

    gw, enc, srch = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSEARCH_")}
    env.update({
        "CAPSEARCH_ENVIRONMENT": "production",
        "CAPSEARCH_DATA_DIR": str(work_dir / "data"),
        "CAPSEARCH_DATABASE_URL": database_url,
        "CAPSEARCH_BLOB_BACKEND": "s3",
        "CAPSEARCH_S3__ENDPOINT": s3.endpoint,
        "CAPSEARCH_S3__ACCESS_KEY": s3.access_key,
        "CAPSEARCH_S3__SECRET_KEY": s3.secret_key,
        "CAPSEARCH_S3__BUCKET": bucket,
        "CAPSEARCH_BROKER_URL": redis.url,
        "CAPSEARCH_QUEUE_BACKEND": "celery",
        "CAPSEARCH_SERVICE_TOKEN": SERVICE_TOKEN,
        "CAPSEARCH_AUTH__SESSION_SECRET": "fault-stack-session-secret-0123456789",
        "CAPSEARCH_GATEWAY_PORT": str(gw),
        "CAPSEARCH_ENCODER_PORT": str(enc),
        "CAPSEARCH_SEARCH_PORT": str(srch),
        "CAPSEARCH_URL": f"http://127.0.0.1:{gw}",
        "CAPSEARCH_ENCODER_URL": f"http://127.0.0.1:{enc}",
        "CAPSEARCH_SEARCH_URL": f"http://127.0.0.1:{srch}",
        "CAPSEARCH_CAPTION_BATCH_SIZE": "4",
        "CAPSEARCH_WORKER_MAX_RETRIES": "8",
        "CAPSEARCH_REQUEUE_AFTER_S": "4",
        "CAPSEARCH_REQUEUE_INTERVAL_S": "1",
        "CAPSEARCH_RATE_LIMIT__RATE_PER_S": "100000",
        "CAPSEARCH_RATE_LIMIT__BURST": "100000",
        "CAPSEARCH_WORKER_METRICS_PORT": str(free_port()),
        "CAPSEARCH_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    })
    env.update(extra_env or {})
    gateway_env = dict(env)
    gateway_env.update({
        "CAPSEARCH_DATABASE_URL": database_url.replace(f"{pg_host}:{pg_port}",
                                                       pg_proxy.address),
        "CAPSEARCH_S3__ENDPOINT": s3_proxy.address,
    })
    engine = create_engine(database_url)
    upgrade(engine)
    key = create_key(make_session_factory(engine), name="fault-tests",
                     scopes=["admin"]).key
    stack = FaultStack(work_dir=work_dir, database_url=database_url, admin_url=pg_admin_url,
                       db_name=db_name, redis=redis, pg_proxy=pg_proxy, s3_proxy=s3_proxy,
                       s3=s3, bucket=bucket, env=env, gateway_env=gateway_env, engine=engine,
                       api_key=key)
    try:
        for name in services:
            stack.start(name)
    except BaseException:
        stack.close()
        raise
    return stack
