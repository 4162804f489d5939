"""Integration fixtures: real Postgres, Redis and S3, and the four services as processes.

Postgres and Redis must be running: `.ci/run` starts both from wheels (`capsearch deps up`)
and points CAPSEARCH_TEST_PG_ADMIN_URL / CAPSEARCH_TEST_REDIS_URL at them; without those
variables the tests use 127.0.0.1:5432 and :6379. The S3 server (SeaweedFS `weed mini`) is
started here. Each session gets its own Postgres database and Redis db number, so a
developer's own data is never touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from minio import Minio
from sqlalchemy import Engine, create_engine, text

from capsearch.client import API_KEY_ENV
from capsearch.server import free_port
from capsearch.stack import ServiceProcess, start_stack, stop_stack
from shared.apikeys import create_key
from shared.config import Settings, settings_from_env
from shared.db import make_session_factory
from shared.db.migrate import upgrade
from tests.support.s3server import S3Server, start_s3_server

PG_ADMIN_URL = os.environ.get(
    "CAPSEARCH_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CAPSEARCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
SERVICE_TOKEN = "integration-service-token-0123456789"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty database for this test session, dropped afterwards."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        pytest.fail(f"Postgres is not reachable at {PG_ADMIN_URL}: {exc} (start it: see README)")
    name = f"capsearch_it_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except Exception as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc} (start it: see README)")
    client.flushdb()
    return REDIS_URL


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@dataclass
class RunningStack:
    settings: Settings
    env: dict[str, str]
    processes: list[ServiceProcess]
    engine: Engine
    s3: S3Server
    api_key: str = ""  # an admin key, also exported as CAPSEARCH_API_KEY for CapsearchClient

    @property
    def url(self) -> str:
        return self.settings.url

    def minio(self) -> Minio:
        return Minio(self.s3.endpoint, access_key=self.s3.access_key,
                     secret_key=self.s3.secret_key, secure=False)

    def object_keys(self) -> set[str]:
        client = self.minio()
        bucket = self.settings.s3.bucket
        if not client.bucket_exists(bucket):
            return set()
        return {o.object_name for o in client.list_objects(bucket, recursive=True)}

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())

    def process(self, name: str) -> ServiceProcess:
        return next(p for p in self.processes if p.name == name)


def stack_env(*, postgres_url: str, redis_url: str, s3: S3Server, data_dir: Path,
              bucket: str) -> dict[str, str]:
    """The environment every service process of the test stack gets."""
    gw, enc, srch = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSEARCH_")}
    env.update({
        "CAPSEARCH_ENVIRONMENT": "production",
        "CAPSEARCH_DATA_DIR": str(data_dir),
        "CAPSEARCH_DATABASE_URL": postgres_url,
        "CAPSEARCH_BLOB_BACKEND": "s3",
        "CAPSEARCH_S3__ENDPOINT": s3.endpoint,
        "CAPSEARCH_S3__ACCESS_KEY": s3.access_key,
        "CAPSEARCH_S3__SECRET_KEY": s3.secret_key,
        "CAPSEARCH_S3__BUCKET": bucket,
        "CAPSEARCH_BROKER_URL": redis_url,
        "CAPSEARCH_QUEUE_BACKEND": "celery",
        "CAPSEARCH_GATEWAY_PORT": str(gw),
        "CAPSEARCH_ENCODER_PORT": str(enc),
        "CAPSEARCH_SEARCH_PORT": str(srch),
        "CAPSEARCH_URL": f"http://127.0.0.1:{gw}",
        "CAPSEARCH_ENCODER_URL": f"http://127.0.0.1:{enc}",
        "CAPSEARCH_SEARCH_URL": f"http://127.0.0.1:{srch}",
        "CAPSEARCH_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
        # structured logs (the request id is checked in the worker's) and the worker's metrics
        "CAPSEARCH_LOG_JSON": "true",
        "CAPSEARCH_WORKER_METRICS_PORT": str(free_port()),
        # bulk imports may read this prefix of the bucket (test_stack_imports.py)
        "CAPSEARCH_IMPORT_PREFIXES": '["incoming/"]',
        # production refuses to start without it; encoder and search refuse calls without it
        "CAPSEARCH_SERVICE_TOKEN": SERVICE_TOKEN,
        "CAPSEARCH_AUTH__SESSION_SECRET": "integration-session-secret-0123456789",
        # limits have their own tests; these tests poll hard
        "CAPSEARCH_RATE_LIMIT__RATE_PER_S": "100000",
        "CAPSEARCH_RATE_LIMIT__BURST": "100000",
        "CAPSEARCH_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    })
    return env


@pytest.fixture(scope="session")
def stack(postgres_url: str, redis_url: str, s3_server: S3Server,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """Encoder, search, gateway and caption worker, each its own process, over real HTTP."""
    data_dir = tmp_path_factory.mktemp("stack")
    env = stack_env(postgres_url=postgres_url, redis_url=redis_url, s3=s3_server,
                    data_dir=data_dir, bucket="capsearch-it")
    settings = settings_from_env(env)
    engine = create_engine(postgres_url)
    upgrade(engine)
    api_key = create_key(make_session_factory(engine), name="integration",
                         scopes=["admin"]).key
    previous_key = os.environ.get(API_KEY_ENV)
    os.environ[API_KEY_ENV] = api_key  # every CapsearchClient of the session sends it
    procs = start_stack(settings, env, data_dir / "logs", timeout=240)
    yield RunningStack(settings=settings, env=env, processes=procs, engine=engine, s3=s3_server,
                       api_key=api_key)
    stop_stack(procs)
    engine.dispose()
    if previous_key is None:
        os.environ.pop(API_KEY_ENV, None)
    else:
        os.environ[API_KEY_ENV] = previous_key
