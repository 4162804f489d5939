"""The gateway starts while its database is unreachable or not migrated yet, answers 503, and
recovers by itself once it is both up and at the head revision."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.core.schema import SchemaGate
from shared.config import Settings
from shared.db import make_engine
from shared.db.migrate import upgrade
from shared.errors import DatabaseUnavailable
from tests.unit.gateway.conftest import assert_error


def test_gateway_starts_without_its_database_and_recovers(tmp_path: Path) -> None:
    later = tmp_path / "not-yet"
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{later / 'db.sqlite'}",
                        auth={"enabled": False}, rate_limit={"enabled": False})
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        assert client.get("/healthz").status_code == 200
        assert "database" in assert_error(client.get("/readyz"), 503, "not_ready")
        message = assert_error(client.get("/v1/images/1"), 503, "database_unavailable")
        assert "try again" in message and str(later) not in message  # no internals leaked
        later.mkdir()  # the database answers now, but it is empty: still 503, naming the fix
        deadline = time.monotonic() + 10
        while "capsearch db upgrade" not in assert_error(
                client.get("/v1/images/1"), 503, "database_unavailable"):
            assert time.monotonic() < deadline, "the gateway did not notice the database"
            time.sleep(0.2)
        engine = make_engine(settings.sqlalchemy_url)
        upgrade(engine)  # what `capsearch db upgrade` (the migrate job) does
        engine.dispose()
        deadline = time.monotonic() + 10
        while client.get("/v1/images/1").status_code != 404:  # answered: no such image
            assert time.monotonic() < deadline, "the gateway did not recover"
            time.sleep(0.2)
        assert client.get("/readyz").status_code == 200


def test_schema_gate_retries_at_most_once_per_interval(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'db.sqlite'}")
    gate = SchemaGate(engine, retry_s=60)
    attempts = 0
    original = gate.engine.connect

    def counting_connect():  # type: ignore[no-untyped-def]
        nonlocal attempts
        attempts += 1
        return original()

    gate.engine.connect = counting_connect  # type: ignore[method-assign]
    for _ in range(5):
        try:
            gate.ensure()
        except DatabaseUnavailable:
            pass
    assert attempts == 1 and not gate.ready
    engine.dispose()


def test_keys_are_checked_against_a_database_that_is_down_as_503(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path,
                        database_url=f"sqlite:///{tmp_path / 'nope' / 'db.sqlite'}",
                        auth={"enabled": True}, rate_limit={"enabled": False})
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        resp = client.get("/v1/images/1", headers={"Authorization": "Bearer csk_" + "a" * 43})
        assert_error(resp, 503, "database_unavailable")


def test_an_exhausted_connection_pool_is_503_not_500(make_gateway) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    gateway = make_gateway()

    def exhausted() -> None:
        raise PoolTimeout("QueuePool limit of size 10 overflow 10 reached")

    original, gateway.context.session_factory = gateway.context.session_factory, exhausted
    try:
        resp = gateway.client.get("/v1/images/1")
    finally:
        gateway.context.session_factory = original
    assert_error(resp, 503, "database_unavailable")
    assert resp.headers["Retry-After"] == "1"
