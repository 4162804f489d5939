"""What kustomize makes of the overlays and of the overlay docs/deploy.md tells operators to
write: generated names that references follow, secrets replaced, patches applied."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

from tests.unit.deploy.manifests import REPO, Resource, render


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_references_follow_hashed_names(rendered: dict[str, list[Resource]]) -> None:
    docs = rendered["cpu"]
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
    docs = render(_production_style_overlay(tmp_path))
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert base64.b64decode(secret["data"]["CAPSEARCH_S3__SECRET_KEY"]) == b"s3cr3t<&>"
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config["data"]["CAPSEARCH_INDEX__NPROBE"] == "16"
    hpa = next(
        d
        for d in docs
        if d["kind"] == "HorizontalPodAutoscaler" and d["metadata"]["name"] == "gateway"
    )
    assert hpa["spec"]["maxReplicas"] == 20
    ours = [
        c["image"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
        for c in d["spec"]["template"]["spec"]["containers"]
        if c["image"].startswith("registry.example.com/capsearch")
    ]
    assert len(ours) == 4 and set(ours) == {"registry.example.com/capsearch:0.2.0"}
