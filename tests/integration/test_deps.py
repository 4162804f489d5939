"""`capsearch deps up|down`: PostgreSQL, Redis and S3 from wheels, on loopback with credentials,
found by later commands through the data dir, and stopped exactly (nothing else)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg2
import pytest
import redis
from minio import Minio

from capsearch.deps import DEPS, stop_deps
from capsearch.deps.processes import free_port, is_running, record, stop_process
from capsearch.deps.redis import spawn_redis
from shared.stackstate import DepsState, read_deps

pytestmark = pytest.mark.integration


def capsearch(*args: str, data_dir: Path | None = None, timeout: float = 300
              ) -> subprocess.CompletedProcess[str]:
    """The real command, with no CAPSEARCH_* setting but (optionally) the data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSEARCH_")}
    if data_dir is not None:
        env["CAPSEARCH_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "capsearch", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def deps_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_dir = tmp_path_factory.mktemp("deps-home")
    up = capsearch("deps", "up", "--data-dir", str(data_dir))
    assert up.returncode == 0, up.stderr[-3000:]
    yield data_dir
    stop_deps(data_dir)


def state_of(data_dir: Path) -> DepsState:
    state = read_deps(data_dir)
    assert state is not None and state.postgres and state.redis and state.s3
    return state


def test_each_listens_on_loopback_only(deps_dir: Path) -> None:
    state = state_of(deps_dir)
    for name in DEPS:
        rec = getattr(state, name).process
        assert is_running(rec), name
        listening = [c.laddr for c in psutil.Process(rec.pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening, f"{name} listens nowhere"
        assert {addr.ip for addr in listening} == {"127.0.0.1"}, (name, listening)


def test_each_wants_its_credentials(deps_dir: Path) -> None:
    state = state_of(deps_dir)
    pg = state.postgres
    assert pg is not None
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", password="wrong",
                         dbname="postgres", connect_timeout=5)
    conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres",
                            password=pg.password, dbname="capsearch", connect_timeout=5)
    with conn.cursor() as cur:
        cur.execute("SHOW server_version")
        assert cur.fetchone()[0].startswith("18.")  # the wheel's PostgreSQL 18
    conn.close()

    assert state.redis is not None
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=state.redis.port).ping()
    assert redis.Redis.from_url(state.redis.url()).ping()

    assert state.s3 is not None
    with pytest.raises(Exception, match="(?i)signature|access"):
        Minio(state.s3.endpoint, access_key=state.s3.access_key, secret_key="wrong-secret",
              secure=False).list_buckets()
    Minio(state.s3.endpoint, access_key=state.s3.access_key, secret_key=state.s3.secret_key,
          secure=False).list_buckets()


def test_commands_with_the_data_dir_reach_its_database(deps_dir: Path) -> None:
    port = state_of(deps_dir).postgres.port  # type: ignore[union-attr]
    check = capsearch("db", "check", data_dir=deps_dir)
    assert check.returncode == 1 and "empty" in check.stderr
    up = capsearch("db", "upgrade", data_dir=deps_dir)
    assert up.returncode == 0, up.stderr
    assert f"127.0.0.1:{port}/capsearch" in up.stdout and "***" in up.stdout  # no password
    assert capsearch("db", "check", data_dir=deps_dir).returncode == 0


def test_down_stops_exactly_what_up_started_and_up_brings_it_back(
        deps_dir: Path, tmp_path: Path) -> None:
    before = state_of(deps_dir)
    assert capsearch("db", "upgrade", data_dir=deps_dir).returncode == 0  # data to keep
    bystander = spawn_redis(tmp_path / "bystander", free_port(), None, persist=False)
    bystander_rec = record(bystander.pid, tmp_path / "bystander" / "redis.log")
    try:
        down = capsearch("deps", "down", "--data-dir", str(deps_dir))
        assert down.returncode == 0, down.stderr
        for name in DEPS:
            assert not is_running(getattr(before, name).process), name
        assert is_running(bystander_rec)  # the same program, not started by `deps up`
        stopped = state_of(deps_dir)
        assert stopped.postgres and stopped.postgres.process is None  # ports, secrets kept

        up = capsearch("deps", "up", "--data-dir", str(deps_dir))
        assert up.returncode == 0, up.stderr[-3000:]
        after = state_of(deps_dir)
        assert after.postgres and before.postgres and after.redis and before.redis
        assert (after.postgres.port, after.redis.port) == (before.postgres.port,
                                                           before.redis.port)
        assert capsearch("db", "check", data_dir=deps_dir).returncode == 0  # data kept
    finally:
        stop_process(bystander_rec)
