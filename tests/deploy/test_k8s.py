"""deploy/edge/k8s against the code: settings, node name, probes, ports, volumes, shutdown."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from edge_node.app import ROUTES
from edge_node.config import EdgeSettings
from tests.deploy import manifests
from tests.deploy.conftest import POD_NAME, EdgeFromEnv
from tests.servers import pick_free_port

Resources = list[dict[str, Any]]
# What the edge takes to stop, in units of shutdown_timeout_s: requests in flight (1), the
# publisher draining the spool into JetStream (0.5), the spool's last flush (1); see the
# lifespan in edge_node.app and edge_node.server.
DRAIN_FACTOR = 2.5
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T|m)?$")
_SUFFIX = {
    None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
}  # fmt: skip


def quantity(value: str | int) -> float:
    match = _QUANTITY.match(str(value))
    assert match is not None, f"not a Kubernetes quantity: {value}"
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def mount_of(container: dict[str, Any], path: Path) -> dict[str, Any]:
    """The volume mount that holds ``path`` (the deepest one)."""
    holding = [m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    assert holding, f"{path} is on no volume; the root filesystem is read-only"
    return max(holding, key=lambda m: len(m["mountPath"]))


def volume(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    for candidate in pod_spec(deployment)["volumes"]:
        if candidate["name"] == name:
            found: dict[str, Any] = candidate
            return found
    raise AssertionError(f"no volume {name}")


def test_kustomization_lists_every_manifest_and_builds() -> None:
    listed = set(manifests.kustomization()["resources"])
    present = {p.name for p in manifests.K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomize build is not checked")
    built = subprocess.run(
        [kubectl, "kustomize", str(manifests.K8S_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert built.returncode == 0, built.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(built.stdout))
    assert kinds == sorted(r["kind"] for r in manifests.k8s_resources())


def test_one_region_in_one_namespace(k8s: Resources) -> None:
    namespace = manifests.find_resource(k8s, "Namespace")["metadata"]["name"]
    assert manifests.kustomization()["namespace"] == namespace
    for resource in k8s:
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == namespace, resource["kind"]
    kinds = {r["kind"] for r in k8s}
    assert {"ConfigMap", "Secret", "Deployment", "Service"} <= kinds
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds


def test_settings_are_edge_settings_and_load(
    k8s: Resources, container: dict[str, Any], pod_env: dict[str, str]
) -> None:
    known = set(manifests.settings_env_names())
    config_map = manifests.named(k8s, "ConfigMap", "proxima-edge")
    declared = set(config_map["data"]) | {entry["name"] for entry in container.get("env", [])}
    assert declared, "the pod sets no PROXIMA_* variables"
    assert declared <= known, f"not settings of the edge: {declared - known}"
    settings = manifests.load_edge_settings(env=pod_env)
    assert settings.region == config_map["data"]["PROXIMA_REGION"]
    assert settings.nats_settings() is not None
    assert settings.nats_user is not None and settings.nats_password is not None


def test_node_name_is_the_pod_name(container: dict[str, Any], pod_settings: EdgeSettings) -> None:
    entry = next(e for e in container["env"] if e["name"] == "PROXIMA_NODE")
    assert entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert pod_settings.node == POD_NAME


def test_container_port_is_the_port_the_edge_listens_on(
    container: dict[str, Any], pod_settings: EdgeSettings, k8s: Resources
) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": pod_settings.port}
    assert pod_settings.host == "0.0.0.0"
    service = manifests.find_resource(k8s, "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_probes_hit_real_routes_on_the_edge_port(container: dict[str, Any]) -> None:
    get_routes = {r.path for r in ROUTES if "GET" in (getattr(r, "methods", None) or ())}
    probes = {
        kind: container[kind]["httpGet"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
        if kind in container
    }
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    for kind, probe in probes.items():
        assert probe["path"] in get_routes, f"{kind}: {probe['path']} is not a route"
        assert probe["port"] in {p["name"] for p in container["ports"]}, kind


def test_selectors_reach_the_pods(k8s: Resources, deployment: dict[str, Any]) -> None:
    labels = pod_labels(deployment)
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    assert selects(manifests.find_resource(k8s, "Service")["spec"]["selector"], labels)
    pdb = manifests.find_resource(k8s, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    spec = pod_spec(deployment)
    anti_affinity = spec["affinity"]["podAntiAffinity"]
    for term in anti_affinity["preferredDuringSchedulingIgnoredDuringExecution"]:
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        assert selects(term["podAffinityTerm"]["labelSelector"]["matchLabels"], labels)
    for constraint in spec.get("topologySpreadConstraints", []):
        assert selects(constraint["labelSelector"]["matchLabels"], labels)


def test_references_resolve(
    k8s: Resources, deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    for source in container["envFrom"]:
        manifests.named(k8s, "ConfigMap", source["configMapRef"]["name"])
    for item in pod_spec(deployment)["volumes"]:
        if "secret" in item:
            data = manifests.secret_data(
                manifests.named(k8s, "Secret", item["secret"]["secretName"])
            )
            assert {i["key"] for i in item["secret"].get("items", [])} <= set(data)
        if "configMap" in item:
            manifests.named(k8s, "ConfigMap", item["configMap"]["name"])
    images = {i["name"] for i in manifests.kustomization().get("images", [])}
    assert container["image"] in images


def test_runs_as_non_root_on_a_read_only_root(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    pod_security = pod_spec(deployment)["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_what_the_edge_writes_is_on_writable_volumes(
    deployment: dict[str, Any], container: dict[str, Any], pod_settings: EdgeSettings
) -> None:
    for path in (pod_settings.spool_dir, pod_settings.bundle_cache_dir, Path("/tmp")):
        mount = mount_of(container, path)
        assert not mount.get("readOnly", False), f"{path} is mounted read-only"
        assert "emptyDir" in volume(deployment, mount["name"]) or "persistentVolumeClaim" in volume(
            deployment, mount["name"]
        )
    spool = volume(deployment, mount_of(container, pod_settings.spool_dir)["name"])
    assert quantity(spool["emptyDir"]["sizeLimit"]) >= pod_settings.spool_max_bytes


def test_public_key_is_mounted_from_the_secret(
    k8s: Resources,
    deployment: dict[str, Any],
    container: dict[str, Any],
    pod_settings: EdgeSettings,
) -> None:
    mount = mount_of(container, pod_settings.public_key)
    assert mount.get("readOnly") is True
    secret_volume = volume(deployment, mount["name"])["secret"]
    relative = str(pod_settings.public_key.relative_to(mount["mountPath"]))
    items = {i["path"]: i["key"] for i in secret_volume["items"]}
    key = items[relative]
    data = manifests.secret_data(manifests.named(k8s, "Secret", secret_volume["secretName"]))
    assert "PUBLIC KEY" in data[key]


def test_grace_period_outlasts_the_load_balancer_and_the_drain(
    deployment: dict[str, Any], container: dict[str, Any], pod_settings: EdgeSettings
) -> None:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop_s = float(command[1])
    grace_s = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace_s > pre_stop_s + DRAIN_FACTOR * pod_settings.shutdown_timeout_s


def test_resources_fit_the_session_store(
    container: dict[str, Any], pod_settings: EdgeSettings
) -> None:
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert quantity(resources["limits"]["memory"]) > pod_settings.sessions_max_bytes
    assert quantity(resources["requests"]["memory"]) <= quantity(resources["limits"]["memory"])


def test_autoscaler_and_disruption_budget(k8s: Resources, deployment: dict[str, Any]) -> None:
    hpa = manifests.find_resource(k8s, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    metrics = hpa["spec"]["metrics"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics)
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    min_replicas = hpa["spec"]["minReplicas"]
    assert min_replicas >= 2
    budget = manifests.find_resource(k8s, "PodDisruptionBudget")["spec"]
    if "maxUnavailable" in budget:
        assert 1 <= budget["maxUnavailable"] < min_replicas
    else:
        assert budget["minAvailable"] < min_replicas


def test_an_edge_started_from_the_manifests_answers_its_probes(
    edge_from_env: EdgeFromEnv, pod_env: dict[str, str], container: dict[str, Any]
) -> None:
    # The leaf node is a port nobody serves here: the edge starts, is alive, and is not
    # ready, since no bundle has come from the bus yet.
    edge = edge_from_env(pod_env, nats_url=f"nats://127.0.0.1:{pick_free_port()}")
    assert edge.settings.node == POD_NAME
    live = httpx.get(edge.url + container["livenessProbe"]["httpGet"]["path"], timeout=10)
    assert live.status_code == 200
    ready = httpx.get(edge.url + container["readinessProbe"]["httpGet"]["path"], timeout=10)
    assert ready.status_code == 503
    assert ready.json()["error"]["code"]
