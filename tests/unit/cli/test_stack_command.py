"""`capsearch stack up`: where the services of a stack listen and what they are told."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from capsearch.commands.stack import service_env, service_layout
from shared.config import Settings


@pytest.fixture(autouse=True)
def no_capsearch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("CAPSEARCH_")]:
        monkeypatch.delenv(name)


def test_a_stack_with_its_own_deps_is_self_contained(tmp_path: Path) -> None:
    args = argparse.Namespace(port=18123, with_deps=True)
    layout = service_layout(Settings(data_dir=tmp_path), args)
    ports = {layout.gateway_port, layout.encoder_port, layout.search_port,
             layout.worker_metrics_port}
    assert layout.gateway_port == 18123 and len(ports) == 4 and 8001 not in ports
    assert len(layout.service_token) >= 16 and layout.with_deps
    env = service_env(tmp_path, layout)
    assert env["CAPSEARCH_DATA_DIR"] == str(tmp_path)  # the deps come from its record
    assert env["CAPSEARCH_URL"] == "http://127.0.0.1:18123"
    assert env["CAPSEARCH_SEARCH_URL"] == f"http://127.0.0.1:{layout.search_port}"
    assert env["CAPSEARCH_SERVICE_TOKEN"] == layout.service_token
    assert env["CAPSEARCH_QUEUE_BACKEND"] == "celery"


def test_a_stack_on_given_servers_keeps_the_settings_ports(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, encoder_port=9001, search_port=9002)
    layout = service_layout(settings, argparse.Namespace(port=None, with_deps=False))
    assert (layout.gateway_port, layout.encoder_port, layout.search_port) == (8000, 9001, 9002)
    assert layout.service_token == "" and not layout.with_deps
    assert "CAPSEARCH_SERVICE_TOKEN" not in service_env(tmp_path, layout)


def test_up_says_in_one_line_that_the_recorded_database_is_down(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from capsearch.cli import main
    from capsearch.deps.processes import free_port
    from shared.stackstate import DEPS_FILE, DepsState, PostgresState, write_private

    closed = free_port()  # nothing listens there
    write_private(tmp_path / DEPS_FILE,
                  DepsState(postgres=PostgresState(port=closed, password="s3cr3t-xyz")))
    assert main(["stack", "up", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot reach the stack's database" in err
    assert f"127.0.0.1:{closed}" in err and "s3cr3t-xyz" not in err


def test_a_damaged_record_is_named(tmp_path: Path) -> None:
    from shared.stackstate import DEPS_FILE

    (tmp_path / DEPS_FILE).parent.mkdir(parents=True)
    (tmp_path / DEPS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="deps.json is not a capsearch stack record"):
        Settings(data_dir=tmp_path)
