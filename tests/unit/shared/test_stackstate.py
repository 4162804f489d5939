"""A data dir's recorded stack reaches Settings below the environment; its files are private."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from shared.config import Settings
from shared.stackstate import (
    DEPS_FILE,
    STACK_FILE,
    DepsState,
    PostgresState,
    ProcessRecord,
    RedisState,
    S3State,
    StackState,
    write_private,
)

PROC = ProcessRecord(pid=1, started=0.0, log="x.log")


def record_stack(data_dir: Path) -> None:
    deps = DepsState(
        postgres=PostgresState(port=5999, password="pg-pw", process=PROC),
        redis=RedisState(port=6999, password="redis-pw"),
        s3=S3State(port=7999, internal_ports=[1, 2, 3, 4], access_key="ak", secret_key="sk"))
    write_private(data_dir / DEPS_FILE, deps)
    write_private(data_dir / STACK_FILE, StackState(
        services={"gateway": PROC}, gateway_port=18000, encoder_port=18001, search_port=18002,
        worker_metrics_port=18003, service_token="t" * 32, with_deps=True))


@pytest.fixture(autouse=True)
def no_capsearch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("CAPSEARCH_")]:
        monkeypatch.delenv(name)


def test_a_data_dir_with_a_stack_gives_its_addresses(tmp_path: Path) -> None:
    record_stack(tmp_path)
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url == "postgresql+psycopg2://postgres:pg-pw@127.0.0.1:5999/capsearch"
    assert settings.broker_url == "redis://:redis-pw@127.0.0.1:6999/0"
    assert settings.blob_backend == "s3" and settings.s3.endpoint == "127.0.0.1:7999"
    assert settings.s3.secret_key.get_secret_value() == "sk"
    assert settings.queue_backend == "celery" and settings.url == "http://127.0.0.1:18000"
    assert settings.search_url == "http://127.0.0.1:18002"
    assert settings.service_token.get_secret_value() == "t" * 32


def test_the_data_dir_may_come_from_the_environment(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    record_stack(tmp_path)
    monkeypatch.setenv("CAPSEARCH_DATA_DIR", str(tmp_path))
    assert Settings().broker_url.endswith("@127.0.0.1:6999/0")


def test_explicit_variables_win_over_the_record(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    record_stack(tmp_path)
    monkeypatch.setenv("CAPSEARCH_DATABASE_URL", "sqlite:///elsewhere.db")
    monkeypatch.setenv("CAPSEARCH_S3__BUCKET", "mine")
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url == "sqlite:///elsewhere.db"
    assert settings.s3.bucket == "mine" and settings.s3.endpoint == "127.0.0.1:7999"  # merged


def test_a_data_dir_without_a_record_keeps_the_defaults(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url is None and settings.blob_backend == "local"
    assert settings.queue_backend == "inprocess"


def test_records_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    record_stack(tmp_path)
    for path in (tmp_path / DEPS_FILE, tmp_path / STACK_FILE):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
