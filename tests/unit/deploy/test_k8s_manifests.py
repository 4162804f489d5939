"""The base's shape: probes, resources, selectors, disruption budgets, network policies."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.deploy.manifests import (
    WORKLOAD_MODULES,
    containers,
    named,
    of_kind,
    pod_spec,
    workloads,
)

Overlay = tuple[str, list[dict[str, Any]]]
HTTP_WORKLOADS = ("gateway", "encoder", "search")
STORES = {"postgres": "StatefulSet", "redis": "StatefulSet", "minio": "StatefulSet"}


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_overlays_hold_every_component(overlay: Overlay) -> None:
    _, docs = overlay
    for name in WORKLOAD_MODULES:
        named(docs, "Deployment", name)
    for name, kind in STORES.items():
        store = named(docs, kind, name)
        assert store["spec"]["volumeClaimTemplates"], f"{name} keeps its data on a volume"
        named(docs, "Service", name)
    for name in HTTP_WORKLOADS:
        named(docs, "Service", name)
    named(docs, "Ingress", "gateway")
    named(docs, "Job", "minio-create-bucket")
    named(docs, "Job", "migrate")


@pytest.mark.parametrize("name", HTTP_WORKLOADS)
def test_http_services_probe_readyz_healthz_and_start_up_separately(
    overlay: Overlay, name: str
) -> None:
    _, docs = overlay
    (container,) = pod_spec(named(docs, "Deployment", name))["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "startupProbe" in container


@pytest.mark.parametrize("name", ["encoder", "search"])
def test_model_and_index_loading_get_a_long_startup_window(overlay: Overlay, name: str) -> None:
    _, docs = overlay
    (container,) = pod_spec(named(docs, "Deployment", name))["containers"]
    startup = container["startupProbe"]
    # /healthz answers while loading; only /readyz says the model / index is in memory
    assert startup["httpGet"]["path"] == "/readyz"
    assert startup["failureThreshold"] * startup.get("periodSeconds", 10) >= 300


def test_caption_worker_has_startup_and_liveness_checks(overlay: Overlay) -> None:
    _, docs = overlay
    (container,) = pod_spec(named(docs, "Deployment", "caption-worker"))["containers"]
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == ["capsearch-healthcheck", "caption"]
    assert "ports" not in container


def test_every_container_has_requests_and_limits(overlay: Overlay) -> None:
    _, docs = overlay
    for workload in workloads(docs):
        for container in containers(workload):
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), (
                    f"{workload['metadata']['name']}/{container['name']} lacks {bound}"
                )


def test_app_pods_run_unprivileged(overlay: Overlay) -> None:
    _, docs = overlay
    for name in WORKLOAD_MODULES:
        spec = pod_spec(named(docs, "Deployment", name))
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_selectors_select_their_pods(overlay: Overlay) -> None:
    _, docs = overlay
    templates = {
        (w["kind"], w["metadata"]["name"]): w["spec"]["template"]["metadata"]["labels"]
        for w in workloads(docs)
    }
    for workload in workloads(docs):
        if workload["kind"] == "Job":
            continue
        labels = templates[(workload["kind"], workload["metadata"]["name"])]
        assert _labels_match(workload["spec"]["selector"]["matchLabels"], labels)
    for service in of_kind(docs, "Service"):
        name = service["metadata"]["name"]
        assert any(_labels_match(service["spec"]["selector"], t) for t in templates.values()), name
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(_labels_match(selector, t) for t in templates.values())


def test_disruption_budgets_cover_the_scaled_services(overlay: Overlay) -> None:
    _, docs = overlay
    budgets = {p["metadata"]["name"] for p in of_kind(docs, "PodDisruptionBudget")}
    assert set(WORKLOAD_MODULES) <= budgets


def test_network_policies_expose_only_the_gateway(overlay: Overlay) -> None:
    _, docs = overlay
    policies = of_kind(docs, "NetworkPolicy")
    deny = named(docs, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"]["podSelector"] == {} and "ingress" not in deny["spec"]
    open_to_all = [
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in policies
        if any("from" not in rule for rule in p["spec"].get("ingress", []))
    ]
    assert open_to_all == ["gateway"]


@pytest.mark.parametrize(
    ("store", "clients"),
    [
        ("postgres", {"gateway", "search", "caption-worker", "migrate"}),
        ("redis", {"gateway", "caption-worker"}),
        ("minio", {"gateway", "caption-worker", "minio-init"}),
    ],
)
def test_stores_accept_only_their_clients(overlay: Overlay, store: str, clients: set[str]) -> None:
    _, docs = overlay
    policy = named(docs, "NetworkPolicy", f"{store}-from-services")
    allowed: set[str] = set()
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            for expr in peer.get("podSelector", {}).get("matchExpressions", []):
                allowed |= set(expr["values"])
    assert allowed == clients


def test_ingress_routes_to_the_gateway_service(overlay: Overlay) -> None:
    _, docs = overlay
    ingress = named(docs, "Ingress", "gateway")
    backends = [
        p["backend"]["service"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]
    ]
    service = named(docs, "Service", "gateway")
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert backends and all(b["name"] == "gateway" for b in backends)
    assert all(b["port"].get("name") in port_names for b in backends)


def test_secret_placeholders_are_refused_by_the_services(overlay: Overlay) -> None:
    """Deploying the base's placeholder secrets fails loudly instead of running with them."""
    import base64

    from shared.config import PLACEHOLDER_SECRETS

    _, docs = overlay
    (secret,) = of_kind(docs, "Secret")
    value = base64.b64decode(secret["data"]["CAPSEARCH_S3__SECRET_KEY"]).decode()
    assert value.lower() in PLACEHOLDER_SECRETS


def test_a_job_migrates_the_database_with_the_services_image(overlay: Overlay) -> None:
    _, docs = overlay
    job = named(docs, "Job", "migrate")
    (container,) = pod_spec(job)["containers"]
    assert container["args"] == ["capsearch", "db", "upgrade"]
    assert "command" not in container  # keeps the image's tini entrypoint
    (search,) = pod_spec(named(docs, "Deployment", "search"))["containers"]
    assert container["image"] == search["image"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    search_env = {e["name"]: e.get("value") for e in search["env"]}
    assert env["CAPSEARCH_DATABASE_URL"] == search_env["CAPSEARCH_DATABASE_URL"]
    assert pod_spec(job)["restartPolicy"] == "OnFailure" and job["spec"]["backoffLimit"] >= 3
    # finished Jobs go, so applying a new image later does not hit the immutable template
    assert job["spec"]["ttlSecondsAfterFinished"] <= 3600
