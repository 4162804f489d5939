"""deploy.render renders like kustomize: checked against recorded kustomize output, and against
the real binary wherever one is installed (deploy/validate.sh installs one)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.checks import differences
from deploy.render import RenderError, render, strategic_merge
from tests.unit.deploy.manifests import OVERLAYS, REPO, real_kustomize


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_generator_names_carry_kustomizes_hash(tmp_path: Path) -> None:
    # expected names recorded from `kubectl kustomize` (kustomize v5.5.0)
    _write(
        tmp_path,
        {
            "kustomization.yaml": (
                "configMapGenerator:\n- name: cfg\n  literals: [A=1, B=<x&y>]\n"
                "secretGenerator:\n- name: sec\n  literals: [K=v]\n"
            )
        },
    )
    names = {d["kind"]: d["metadata"]["name"] for d in render(tmp_path)}
    assert names == {"ConfigMap": "cfg-kh7f5d858d", "Secret": "sec-8gkfgg4d6d"}


def test_strategic_merge_orders_lists_like_kustomize() -> None:
    base = {"env": [{"name": "A"}, {"name": "B", "value": "2"}, {"name": "C"}]}
    patch = {"env": [{"name": "N"}, {"name": "B", "value": "22"}]}
    merged = strategic_merge(base, patch)
    assert merged["env"] == [
        {"name": "N"},
        {"name": "B", "value": "22"},
        {"name": "A"},
        {"name": "C"},
    ]


def test_custom_resources_replace_lists() -> None:
    merged = strategic_merge(
        {"triggers": [{"type": "a"}, {"type": "b"}]}, {"triggers": [{"type": "c"}]}, builtin=False
    )
    assert merged == {"triggers": [{"type": "c"}]}


def test_unsupported_fields_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, {"kustomization.yaml": "replicas:\n- name: x\n  count: 2\n"})
    with pytest.raises(RenderError, match="replicas"):
        render(tmp_path)


def test_references_follow_hashed_names(tmp_path: Path) -> None:
    docs = render(REPO / "deploy" / "k8s" / "overlays" / "cpu")
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for source in container.get("envFrom", []):
                assert ("ConfigMap", source["configMapRef"]["name"]) in names
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ("Secret", ref["name"]) in names


def _production_style_overlay(tmp_path: Path) -> Path:
    """The overlay docs/deploy.md tells operators to write, beside a copy of deploy/k8s."""
    shutil.copytree(REPO / "deploy" / "k8s", tmp_path / "k8s")
    return _write(
        tmp_path / "prod",
        {
            "secrets.env": "POSTGRES_PASSWORD=0a1b2c\nCAPSEARCH_S3__ACCESS_KEY=me\n"
            "CAPSEARCH_S3__SECRET_KEY=s3cr3t<&>\n",
            "kustomization.yaml": (
                "resources: [../k8s/overlays/cpu]\n"
                "secretGenerator:\n- name: capsearch-secrets\n  behavior: replace\n"
                "  envs: [secrets.env]\n"
                "configMapGenerator:\n- name: capsearch-config\n  behavior: merge\n"
                "  literals: [CAPSEARCH_INDEX__NPROBE=16]\n"
                "patches:\n- target: {kind: HorizontalPodAutoscaler, name: gateway}\n"
                "  patch: |-\n    apiVersion: autoscaling/v2\n    kind: HorizontalPodAutoscaler\n"
                "    metadata: {name: any}\n    spec: {maxReplicas: 20}\n"
                "images:\n- name: registry.example.com/capsearch\n  newTag: 0.2.0\n"
            ),
        },
    )


def test_production_style_overlay_replaces_secrets(tmp_path: Path) -> None:
    import base64

    docs = render(_production_style_overlay(tmp_path))
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert base64.b64decode(secret["data"]["CAPSEARCH_S3__SECRET_KEY"]) == b"s3cr3t<&>"
    hpa = next(
        d
        for d in docs
        if d["kind"] == "HorizontalPodAutoscaler" and d["metadata"]["name"] == "gateway"
    )
    assert hpa["spec"]["maxReplicas"] == 20


@pytest.fixture(scope="module")
def kustomize() -> list[str]:
    command = real_kustomize()
    if command is None:
        pytest.skip("no kubectl/kustomize >= 4 installed (bash deploy/validate.sh installs one)")
    return command


def _kustomize(command: list[str], directory: Path) -> list[dict]:
    out = subprocess.run(
        [*command, str(directory)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlays_render_as_real_kustomize_does(kustomize: list[str], name: str) -> None:
    overlay = REPO / "deploy" / "k8s" / "overlays" / name
    assert differences(_kustomize(kustomize, overlay), render(overlay)) == []


def test_production_style_overlay_renders_as_real_kustomize_does(
    kustomize: list[str], tmp_path: Path
) -> None:
    overlay = _production_style_overlay(tmp_path)
    assert differences(_kustomize(kustomize, overlay), render(overlay)) == []
