"""Every CAPSEARCH_* variable the deployment sets is a setting the code reads, with a valid value.

Renaming or removing a field of shared.config.Settings fails these tests until compose, the
Kubernetes manifests and the Dockerfile follow.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from shared.config import Settings
from tests.unit.deploy.manifests import (
    COMPOSE_GPU_FILE,
    WORKLOAD_MODULES,
    capsearch_names,
    compose_environment,
    container_env,
    dockerfile_env_names,
    interpolate,
    k8s_env_names,
    load_compose,
    named,
    setting_env_names,
)

Overlay = tuple[str, list[dict[str, Any]]]
SETTINGS = setting_env_names()
# stand-ins for secrets, which no file in the repository holds
FAKE_SECRET = "a-real-looking-secret-0123456789"
COMPOSE_VARIABLES = {
    "POSTGRES_PASSWORD": FAKE_SECRET,
    "MINIO_ROOT_USER": "capsearch",
    "MINIO_ROOT_PASSWORD": FAKE_SECRET,
    "SERVICE_TOKEN": FAKE_SECRET,
    "SESSION_SECRET": FAKE_SECRET,
}


def _unknown(names: set[str]) -> set[str]:
    return {n for n in capsearch_names(names) if n.upper() not in SETTINGS}


def test_setting_names_include_nested_groups() -> None:
    assert {"CAPSEARCH_S3__ENDPOINT", "CAPSEARCH_S3__SECRET_KEY", "CAPSEARCH_INDEX__NPROBE"} <= (
        SETTINGS
    )
    assert "CAPSEARCH_S3__ENDPIONT" not in SETTINGS  # a misspelt or renamed field is caught
    assert _unknown({"CAPSEARCH_GATEWAY_PORTS", "POSTGRES_PASSWORD"}) == {"CAPSEARCH_GATEWAY_PORTS"}


def test_k8s_sets_only_real_settings(overlay: Overlay) -> None:
    _, docs = overlay
    names = k8s_env_names(docs)
    assert len(capsearch_names(names)) >= 15  # the walk found the ConfigMap and env entries
    assert not _unknown(names)


def test_compose_sets_only_real_settings(compose: dict[str, Any]) -> None:
    names: set[str] = set()
    for service in compose["services"].values():
        names |= set(compose_environment(service))
    assert len(capsearch_names(names)) >= 15
    assert not _unknown(names)


def test_gpu_compose_override_sets_only_real_settings() -> None:
    names: set[str] = set()
    for service in load_compose(COMPOSE_GPU_FILE)["services"].values():
        names |= set(compose_environment(service))
    assert not _unknown(names)


def test_dockerfile_sets_only_real_settings() -> None:
    assert not _unknown(dockerfile_env_names())


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    import os

    for name in list(os.environ):
        if name.upper().startswith("CAPSEARCH_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def _k8s_values(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    env = container_env(docs, container)
    secrets = {k: FAKE_SECRET for k, v in env.items() if v is None}
    known = {k: v for k, v in env.items() if v is not None}
    # $(VAR) references, as the kubelet expands them
    values = {
        k: re.sub(r"\$\((\w+)\)", lambda m: secrets.get(m.group(1), known.get(m.group(1), "")), v)
        for k, v in known.items()
    }
    return {**secrets, **values}


@pytest.mark.parametrize("workload", list(WORKLOAD_MODULES))
def test_k8s_values_make_valid_production_settings(
    overlay: Overlay, workload: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, docs = overlay
    (container,) = named(docs, "Deployment", workload)["spec"]["template"]["spec"]["containers"]
    settings = _settings_from(capsearch_only(_k8s_values(docs, container)), monkeypatch)
    assert settings.environment == "production"
    assert settings.host == "0.0.0.0"
    if workload in ("gateway", "search", "caption-worker"):
        assert settings.sqlalchemy_url.startswith("postgresql+psycopg2://capsearch:")
    if workload in ("gateway", "caption-worker"):
        assert settings.blob_backend == "s3"
        assert settings.s3.secret_key.get_secret_value() == FAKE_SECRET


@pytest.mark.parametrize("service", list(WORKLOAD_MODULES))
def test_compose_values_make_valid_production_settings(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        k: interpolate(v, COMPOSE_VARIABLES)
        for k, v in compose_environment(compose["services"][service]).items()
    }
    settings = _settings_from(capsearch_only(env), monkeypatch)
    assert settings.environment == "production"
    if service in ("gateway", "search", "caption-worker"):
        assert FAKE_SECRET in settings.sqlalchemy_url
    if service in ("gateway", "caption-worker"):
        assert settings.blob_backend == "s3"


def test_placeholder_secret_in_compose_would_be_refused(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        k: interpolate(v, {**COMPOSE_VARIABLES, "MINIO_ROOT_PASSWORD": "minioadmin"})
        for k, v in compose_environment(compose["services"]["gateway"]).items()
    }
    with pytest.raises(ValueError, match="placeholder"):
        _settings_from(capsearch_only(env), monkeypatch)


def capsearch_only(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.upper().startswith("CAPSEARCH_")}
