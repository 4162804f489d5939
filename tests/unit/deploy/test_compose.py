"""docker-compose.yml: the seven services, volumes, secrets without defaults, the GPU profile."""

from __future__ import annotations

import re
from typing import Any

from tests.unit.deploy.manifests import COMPOSE_FILE, COMPOSE_GPU_FILE, load_compose

SEVEN = {"postgres", "redis", "minio", "gateway", "encoder", "search", "caption-worker"}
SECRETS = ("POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "SESSION_SECRET")


def test_compose_names_the_seven_services(compose: dict[str, Any]) -> None:
    assert SEVEN <= set(compose["services"])


def test_stores_keep_data_in_named_volumes(compose: dict[str, Any]) -> None:
    volumes = set(compose["volumes"])
    for name in ("postgres", "redis", "minio"):
        mounts = [m.split(":", 1)[0] for m in compose["services"][name]["volumes"]]
        assert mounts and set(mounts) <= volumes, name


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name in SEVEN:
        assert compose["services"][name]["healthcheck"]["test"], name


def test_secrets_have_no_defaults() -> None:
    text = COMPOSE_FILE.read_text()
    for name in SECRETS:
        uses = re.findall(rf"\$\{{{name}(.*?)\}}", text)
        assert uses, name
        assert all(use == ":?Variable not set" for use in uses), (name, uses)


def test_gpu_profile_gives_a_worker_an_nvidia_device(compose: dict[str, Any]) -> None:
    gpu_workers = [s for s in compose["services"].values() if "gpu" in s.get("profiles", [])]
    (worker,) = gpu_workers
    assert worker["command"] == ["python", "-m", "services.caption"]
    assert worker["build"]["args"]["DEVICE"] == "cuda"
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert worker["environment"]["CAPSEARCH_DEVICE"] == "cuda"


def test_gpu_override_turns_the_worker_into_a_gpu_worker() -> None:
    override = load_compose(COMPOSE_GPU_FILE)["services"]
    assert set(override) == {"caption-worker"}
    worker = override["caption-worker"]
    assert worker["build"]["args"]["DEVICE"] == "cuda"
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"


def test_default_stack_runs_on_the_cpu_image(compose: dict[str, Any]) -> None:
    for name in ("gateway", "encoder", "search", "caption-worker"):
        service = compose["services"][name]
        assert service["build"]["args"]["DEVICE"] == "cpu"
        assert "profiles" not in service


def test_only_the_gateway_publishes_a_port(compose: dict[str, Any]) -> None:
    published = {n for n, s in compose["services"].items() if s.get("ports")}
    assert published == {"gateway"}


def test_bucket_is_created_before_the_services_start(compose: dict[str, Any]) -> None:
    init = compose["services"]["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb --ignore-existing" in " ".join(init["command"])


def test_the_schema_is_migrated_once_before_the_services_that_use_it(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    migrate = services["migrate"]
    assert migrate["command"] == ["capsearch", "db", "upgrade"]
    assert migrate["image"] == services["gateway"]["image"]  # the same code, the same head
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["environment"]["CAPSEARCH_DATABASE_URL"] == (
        services["search"]["environment"]["CAPSEARCH_DATABASE_URL"])
    users = [n for n, s in services.items() if "CAPSEARCH_DATABASE_URL" in s.get(
        "environment", {}) and n != "migrate"]
    assert {"gateway", "search", "caption-worker", "caption-worker-gpu"} <= set(users)
    for name in users:
        rule = services[name]["depends_on"]["migrate"]
        assert rule["condition"] == "service_completed_successfully", name
