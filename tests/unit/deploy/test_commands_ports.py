"""Containers run the commands `capsearch stack up` runs, on the ports and paths the code serves."""

from __future__ import annotations

import ast
import importlib
from typing import Any
from urllib.parse import urlsplit

import pytest

from shared.config import Settings
from tests.unit.deploy.manifests import (
    PORT_SETTINGS,
    REPO,
    WORKLOAD_MODULES,
    compose_environment,
    container_env,
    named,
    resolve_port,
)

Overlay = tuple[str, list[dict[str, Any]]]
DEFAULTS = Settings.model_fields


def _command(module: str) -> list[str]:
    return ["python", "-m", f"services.{module}"]


def _port_from(env: dict[str, Any], module: str) -> int:
    """The port a service binds: its CAPSEARCH_*_PORT value, else the Settings default."""
    field = PORT_SETTINGS[module]
    value = env.get(f"CAPSEARCH_{field.upper()}")
    return int(value) if value is not None else int(DEFAULTS[field].default)


def _paths_in(source: str) -> set[str]:
    """Route paths declared with `@<router>.get("...")` in Python source."""
    paths: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("get", "api_route") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    paths.add(first.value)
    return paths


def _served_paths(module: str) -> set[str]:
    """Route paths declared anywhere in the service's package (subpackages included)."""
    paths: set[str] = set()
    for source in (REPO / "services" / module).rglob("*.py"):
        paths |= _paths_in(source.read_text())
    return paths


@pytest.mark.parametrize("module", sorted(set(WORKLOAD_MODULES.values())))
def test_entry_point_modules_run(module: str) -> None:
    """`python -m services.<module>`, what the containers run, has a main() to call."""
    entry = importlib.import_module(f"services.{module}.__main__")
    assert callable(entry.main)


def test_deployed_commands_are_the_stack_commands() -> None:
    """The containers run exactly the modules `capsearch stack up` starts."""
    from capsearch.stack import SERVICE_MODULES

    deployed = {f"services.{module}" for module in WORKLOAD_MODULES.values()}
    assert deployed == set(SERVICE_MODULES.values())


@pytest.mark.parametrize("module", sorted(PORT_SETTINGS))
def test_services_serve_the_probed_paths(module: str) -> None:
    assert {"/healthz", "/readyz"} <= _served_paths(module)


def test_route_reader_finds_decorated_routes() -> None:
    source = (
        'from x import r\n@r.get("/healthz")\nasync def h(): ...\n@r.post("/v1/x")\ndef p(): ...\n'
    )
    assert _paths_in(source) == {"/healthz"}


@pytest.mark.parametrize(("workload", "module"), list(WORKLOAD_MODULES.items()))
def test_k8s_runs_the_stack_commands_under_tini(
    overlay: Overlay, workload: str, module: str
) -> None:
    _, docs = overlay
    (container,) = named(docs, "Deployment", workload)["spec"]["template"]["spec"]["containers"]
    assert container["args"] == _command(module)
    # `command` would replace the image's ENTRYPOINT (tini) and lose signal handling
    assert "command" not in container


@pytest.mark.parametrize(("workload", "module"), list(WORKLOAD_MODULES.items()))
def test_compose_runs_the_stack_commands(
    compose: dict[str, Any], workload: str, module: str
) -> None:
    service = compose["services"][workload]
    assert service["command"] == _command(module)
    assert "entrypoint" not in service


@pytest.mark.parametrize("workload", ["gateway", "encoder", "search"])
def test_k8s_ports_and_probes_match_the_bound_port(overlay: Overlay, workload: str) -> None:
    _, docs = overlay
    module = WORKLOAD_MODULES[workload]
    (container,) = named(docs, "Deployment", workload)["spec"]["template"]["spec"]["containers"]
    port = _port_from(container_env(docs, container), module)
    assert resolve_port(container, "http") == port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert resolve_port(container, container[probe]["httpGet"]["port"]) == port
    service = named(docs, "Service", workload)
    for service_port in service["spec"]["ports"]:
        assert resolve_port(container, service_port["targetPort"]) == port


@pytest.mark.parametrize(
    ("setting", "service"), [("encoder_url", "encoder"), ("search_url", "search")]
)
def test_k8s_service_urls_name_the_services(overlay: Overlay, setting: str, service: str) -> None:
    _, docs = overlay
    for workload in ("gateway", "caption-worker"):
        (container,) = named(docs, "Deployment", workload)["spec"]["template"]["spec"]["containers"]
        url = urlsplit(str(container_env(docs, container)[f"CAPSEARCH_{setting.upper()}"]))
        target = named(docs, "Service", url.hostname or "")
        assert url.port in [p["port"] for p in target["spec"]["ports"]]
        assert url.hostname == service


def test_k8s_store_addresses_name_the_store_services(overlay: Overlay) -> None:
    _, docs = overlay
    (container,) = named(docs, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"]
    env = container_env(docs, container)
    checks = {
        "CAPSEARCH_BROKER_URL": urlsplit(str(env["CAPSEARCH_BROKER_URL"])),
        "CAPSEARCH_DATABASE_URL": urlsplit(str(env["CAPSEARCH_DATABASE_URL"])),
        "CAPSEARCH_S3__ENDPOINT": urlsplit(f"//{env['CAPSEARCH_S3__ENDPOINT']}"),
    }
    for name, url in checks.items():
        service = named(docs, "Service", url.hostname or "")
        assert url.port in [p["port"] for p in service["spec"]["ports"]], name


@pytest.mark.parametrize("workload", ["gateway", "encoder", "search"])
def test_compose_ports_healthchecks_and_urls_match(compose: dict[str, Any], workload: str) -> None:
    services = compose["services"]
    service = services[workload]
    module = WORKLOAD_MODULES[workload]
    env = compose_environment(service)
    port = _port_from(env, module)
    assert service["healthcheck"]["test"] == ["CMD", "capsearch-healthcheck", module]
    if workload == "gateway":
        (published,) = service["ports"]
        assert published.rsplit(":", 1)[1] == str(port)
    for other in ("gateway", "caption-worker"):
        url = compose_environment(services[other]).get(f"CAPSEARCH_{module.upper()}_URL")
        if url is not None:
            parsed = urlsplit(url)
            assert (parsed.hostname, parsed.port) == (workload, port)


ONE_SHOT = ("minio-init", "migrate")  # compose services that run to completion


def test_compose_worker_dependencies_are_healthy_first(compose: dict[str, Any]) -> None:
    for name in ("gateway", "caption-worker", "search"):
        for dep, rule in compose["services"][name]["depends_on"].items():
            expected = (
                "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            )
            assert rule["condition"] == expected, f"{name} -> {dep}"
            assert "healthcheck" in compose["services"][dep] or dep in ONE_SHOT


def test_the_migrate_command_is_a_real_cli_command(
        compose: dict[str, Any], overlay: Overlay) -> None:
    from capsearch.cli import build_parser
    from capsearch.commands.db import run_upgrade

    _, docs = overlay
    (job,) = named(docs, "Job", "migrate")["spec"]["template"]["spec"]["containers"]
    for command in (compose["services"]["migrate"]["command"], job["args"]):
        assert command[0] == "capsearch"  # the console script the image installs
        assert build_parser().parse_args(command[1:]).func is run_upgrade
