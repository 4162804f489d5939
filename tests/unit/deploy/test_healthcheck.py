"""The image's health-check script: role from the command line, the probe URL, ping replies."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from tests.unit.deploy.manifests import REPO


@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    path = REPO / "deploy" / "docker" / "healthcheck.py"
    spec = importlib.util.spec_from_file_location("capsearch_healthcheck", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        (["tini", "--", "python", "-m", "services.gateway"], "gateway"),
        (["/usr/bin/tini", "--", "python", "-m", "services.caption", "--pool", "solo"], "caption"),
        (["python", "-m", "services.search"], "search"),
        (["python", "-m", "capsearch.cli"], None),
        (["python", "-m", "services.unknown"], None),
    ],
)
def test_role_comes_from_the_command_line(
    healthcheck: ModuleType, argv: list[str], role: str | None
) -> None:
    assert healthcheck.role_from_cmdline(argv) == role


def test_wildcard_bind_is_probed_on_loopback(healthcheck: ModuleType) -> None:
    assert healthcheck.probe_url("gateway", live=False, host="0.0.0.0", port=8000) == (
        "http://127.0.0.1:8000/readyz"
    )
    assert healthcheck.probe_url("search", live=True, host="::1", port=8002) == (
        "http://[::1]:8002/healthz"
    )


def test_worker_answers_only_from_this_host(healthcheck: ModuleType) -> None:
    replies = [{"caption@pod-a": {"ok": "pong"}}, {"caption@pod-b": {"ok": "pong"}}]
    assert healthcheck.answered(replies, "pod-b")
    assert not healthcheck.answered(replies, "pod-c")


def test_unknown_role_is_an_error(healthcheck: ModuleType) -> None:
    assert healthcheck.main(["nonsense"]) == 2


def test_roles_cover_every_service(healthcheck: ModuleType) -> None:
    assert set(healthcheck.ROLES) == {"gateway", "encoder", "search", "caption"}
    assert set(healthcheck.HTTP_ROLES.values()) == {"gateway_port", "encoder_port", "search_port"}
