"""What scales on what: HPAs for the HTTP services, KEDA on the caption queue for the worker."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from shared.celery_app import CAPTION_QUEUE
from tests.unit.deploy.manifests import KEDA_SCHEMA, named, of_kind

Overlay = tuple[str, list[dict[str, Any]]]


@pytest.mark.parametrize("target", ["gateway", "encoder", "search"])
def test_http_services_have_a_cpu_hpa(overlay: Overlay, target: str) -> None:
    _, docs = overlay
    hpa = named(docs, "HorizontalPodAutoscaler", target)
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", target)
    named(docs, "Deployment", target)  # the target exists
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    metrics = hpa["spec"]["metrics"]
    assert {"type": "Resource", "name": "cpu"} in [
        {"type": m["type"], "name": m.get("resource", {}).get("name")} for m in metrics
    ]


def test_hpa_owned_deployments_leave_replicas_to_the_autoscaler(overlay: Overlay) -> None:
    _, docs = overlay
    for name in ("gateway", "encoder", "search", "caption-worker"):
        assert "replicas" not in named(docs, "Deployment", name)["spec"], name


def test_caption_worker_scales_on_the_caption_queue_with_keda(overlay: Overlay) -> None:
    _, docs = overlay
    scaled = named(docs, "ScaledObject", "caption-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    ref = scaled["spec"]["scaleTargetRef"]
    assert (ref.get("kind", "Deployment"), ref["name"]) == ("Deployment", "caption-worker")
    named(docs, "Deployment", "caption-worker")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == CAPTION_QUEUE
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


def test_keda_reaches_the_redis_service_by_its_cluster_name(overlay: Overlay) -> None:
    _, docs = overlay
    scaled = named(docs, "ScaledObject", "caption-worker")
    redis = named(docs, "Service", "redis")
    namespace = redis["metadata"]["namespace"]
    port = redis["spec"]["ports"][0]["port"]
    address = scaled["spec"]["triggers"][0]["metadata"]["address"]
    assert address == f"redis.{namespace}.svc.cluster.local:{port}"


def test_keda_and_the_broker_use_the_same_redis_database(overlay: Overlay) -> None:
    _, docs = overlay
    scaled = named(docs, "ScaledObject", "caption-worker")
    config = next(d for d in of_kind(docs, "ConfigMap") if "CAPSEARCH_BROKER_URL" in d["data"])
    broker_db = re.fullmatch(r"redis://[^/]+/(\d+)", config["data"]["CAPSEARCH_BROKER_URL"])
    assert broker_db, "CAPSEARCH_BROKER_URL must name its database"
    assert scaled["spec"]["triggers"][0]["metadata"]["databaseIndex"] == broker_db.group(1)


def test_no_hpa_competes_with_keda_for_the_worker(overlay: Overlay) -> None:
    _, docs = overlay
    targets = [
        h["spec"]["scaleTargetRef"]["name"] for h in of_kind(docs, "HorizontalPodAutoscaler")
    ]
    assert "caption-worker" not in targets


def test_scaledobject_matches_the_keda_schema(overlay: Overlay) -> None:
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema not installed (deploy/validate.sh installs it)"
    )
    _, docs = overlay
    schema = json.loads(KEDA_SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for scaled in of_kind(docs, "ScaledObject"):
        errors = [e.message for e in validator.iter_errors(scaled)]
        assert not errors, errors


def test_keda_schema_rejects_unquoted_numbers_and_unknown_fields() -> None:
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema not installed (deploy/validate.sh installs it)"
    )
    validator = jsonschema.Draft202012Validator(json.loads(KEDA_SCHEMA.read_text()))
    bad = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "w"},
        "spec": {
            "scaleTargetRef": {"name": "w"},
            "minReplicaCont": 1,
            "triggers": [
                {
                    "type": "redis",
                    "metadata": {"address": "r:6379", "listName": "q", "listLength": 20},
                }
            ],
        },
    }
    messages = " ".join(e.message for e in validator.iter_errors(bad))
    assert "minReplicaCont" in messages
    assert "20 is not of type 'string'" in messages


def test_gpu_overlay_puts_the_worker_on_an_nvidia_gpu(rendered: dict[str, Any]) -> None:
    worker = named(rendered["gpu"], "Deployment", "caption-worker")
    spec = worker["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert container["image"].endswith("-cuda")
    assert {"name": "CAPSEARCH_DEVICE", "value": "cuda"} in container["env"]
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert spec["nodeSelector"]


def test_gpu_overlay_changes_only_the_worker(rendered: dict[str, Any]) -> None:
    for name in ("gateway", "encoder", "search"):
        (container,) = named(rendered["gpu"], "Deployment", name)["spec"]["template"]["spec"][
            "containers"
        ]
        assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
        assert not container["image"].endswith("-cuda")


def test_cpu_overlay_asks_for_no_gpu(rendered: dict[str, Any]) -> None:
    text = json.dumps(rendered["cpu"])
    assert "nvidia.com/gpu" not in text
    assert "-cuda" not in text
