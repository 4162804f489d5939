"""Reading the deployment files the way the platforms do: rendered overlays, compose, env."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from shared.config import Settings

REPO = Path(__file__).resolve().parents[3]
OVERLAYS = ("cpu", "gpu")
COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE_GPU_FILE = REPO / "docker-compose.gpu.yml"
DOCKERFILE = REPO / "Dockerfile"
KEDA_SCHEMA = REPO / "deploy" / "schemas" / "keda-scaledobject-v1alpha1.schema.json"

# workload (k8s name = compose service) -> the module it runs
WORKLOAD_MODULES = {
    "gateway": "gateway",
    "encoder": "encoder",
    "search": "search",
    "caption-worker": "caption",
}
# module -> the setting that holds its port (the caption worker listens on none)
PORT_SETTINGS = {"gateway": "gateway_port", "encoder": "encoder_port", "search": "search_port"}

Resource = dict[str, Any]


# --- settings ---------------------------------------------------------------------------------


def setting_env_names(model: type[BaseModel] = Settings, prefix: str = "CAPSEARCH_") -> set[str]:
    """Every env variable name Settings reads: fields, and nested groups' fields joined by `__`."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        env = f"{prefix}{name}".upper()
        names.add(env)  # a whole group may also be given as JSON
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= setting_env_names(annotation, f"{env}__")
    return names


def capsearch_names(names: Iterator[str] | list[str] | set[str]) -> set[str]:
    return {n for n in names if n.upper().startswith("CAPSEARCH_")}


# --- kubernetes -------------------------------------------------------------------------------


def kustomize_command() -> list[str]:
    """`kubectl kustomize` (or `kustomize build`) to render with; without one, the test is
    skipped, except in CI (`CI=true`), where a missing renderer is a failure."""
    command = real_kustomize()
    if command is not None:
        return command
    message = ("no kubectl/kustomize >= 4 to render the overlays with: `bash deploy/validate.sh` "
               "installs one, or install kubectl")
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def render(directory: Path) -> list[Resource]:
    """The objects `kubectl kustomize DIRECTORY` renders."""
    out = subprocess.run([*kustomize_command(), str(directory)], capture_output=True,
                         text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise AssertionError(f"kustomize {directory} failed: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def render_overlay(name: str) -> list[Resource]:
    return render(REPO / "deploy" / "k8s" / "overlays" / name)


def of_kind(docs: list[Resource], kind: str) -> list[Resource]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[Resource], kind: str, name: str) -> Resource:
    hits = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind} {name}, found {len(hits)}"
    return hits[0]


def pod_spec(workload: Resource) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(workload: Resource) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def workloads(docs: list[Resource]) -> list[Resource]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]


def generated(docs: list[Resource], kind: str, base_name: str) -> Resource:
    """A generated ConfigMap/Secret, whose name carries kustomize's hash suffix."""
    hits = [
        d
        for d in of_kind(docs, kind)
        if re.fullmatch(rf"{re.escape(base_name)}(-[a-z0-9]{{10}})?", d["metadata"]["name"])
    ]
    assert len(hits) == 1, f"expected one {kind} {base_name}"
    return hits[0]


def container_env(docs: list[Resource], container: dict[str, Any]) -> dict[str, str | None]:
    """The environment a container gets: envFrom ConfigMaps/Secrets, then env (which wins).

    Values from Secrets or valueFrom references are None (unknown offline).
    """
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(by_name[("ConfigMap", source["configMapRef"]["name"])].get("data", {}))
        if "secretRef" in source:
            secret = by_name[("Secret", source["secretRef"]["name"])]
            env.update({k: None for k in secret.get("data", {})})
    for item in container.get("env", []):
        env[item["name"]] = item.get("value")
    return env


def k8s_env_names(docs: list[Resource]) -> set[str]:
    """Every variable name the manifests set: generated data keys and container env."""
    names: set[str] = set()
    for doc in docs:
        if doc["kind"] in ("ConfigMap", "Secret"):
            names |= set(doc.get("data", {}))
    for workload in workloads(docs):
        for container in containers(workload):
            names |= {item["name"] for item in container.get("env", [])}
    return names


def resolve_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    for item in container.get("ports", []):
        if item.get("name") == port:
            return int(item["containerPort"])
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


def real_kustomize() -> list[str] | None:
    """`kubectl kustomize` / `kustomize build` when one with kustomize >= 4 is installed."""
    tools_dir = os.environ.get("DEPLOY_TOOLS_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "capsearch-deploy"
    )
    candidates: list[tuple[list[str], list[str], str]] = []
    for kubectl in (shutil.which("kubectl"), str(Path(tools_dir) / "kubectl")):
        if kubectl and Path(kubectl).is_file():
            candidates.append(
                (
                    [kubectl, "kustomize"],
                    [kubectl, "version", "--client"],
                    r"Kustomize Version: v(\d+)",
                )
            )
    kustomize = shutil.which("kustomize")
    if kustomize:
        candidates.append(([kustomize, "build"], [kustomize, "version"], r"v?(\d+)\."))
    for command, version_command, pattern in candidates:
        try:
            out = subprocess.run(
                version_command, capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        match = re.search(pattern, out)
        if match and int(match.group(1)) >= 4:
            return command
    return None


# --- compose ----------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {}) or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error}: given variables, else the default."""

    def substitute(match: re.Match[str]) -> str:
        name, whole = match.group(1), match.group(0)
        if name in variables:
            return variables[name]
        if ":-" in whole:
            return whole.split(":-", 1)[1][:-1]
        raise AssertionError(f"{whole} has no value in the test environment")

    return _INTERPOLATION.sub(substitute, value).replace("$$", "$")


def dockerfile_env_names(path: Path = DOCKERFILE) -> set[str]:
    """Names set by ENV instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    names: set[str] = set()
    for line in text.splitlines():
        if line.strip().upper().startswith("ENV "):
            names |= set(re.findall(r"(\w+)=", line))
    return names
