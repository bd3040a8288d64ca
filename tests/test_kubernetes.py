"""The Kubernetes manifests, offline: each overlay renders (kustomize), every object validates
against the Kubernetes 1.32 JSON schemas (shipped by the kubernetes-validate package) or the
CRD schemas of CloudNativePG and the Prometheus operator (tests/data/kubernetes/crds, see its
README), and the wiring holds: each process reaches its own database and NATS with settings
it accepts, probes, limits and security settings are there, every Secret a manifest refers to
is in the example, and the NetworkPolicies admit only what they should."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gateway.settings import GatewaySettings
from services.demand.settings import DemandSettings
from services.enterprises.settings import EnterprisesSettings
from services.mentoring.settings import MentoringSettings
from tests import kustomize

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy/kubernetes"
CRDS = ROOT / "tests/data/kubernetes/crds"
KUBERNETES_VERSION = "1.32"
OVERLAYS = ("development", "production")
APPS = ("gateway", "enterprises", "demand", "mentoring")
SETTINGS = {
    "gateway": GatewaySettings,
    "enterprises": EnterprisesSettings,
    "demand": DemandSettings,
    "mentoring": MentoringSettings,
}
CRD_SCHEMAS = {
    ("postgresql.cnpg.io/v1", "Cluster"): "postgresql.cnpg.io_cluster_v1.json",
    ("postgresql.cnpg.io/v1", "Database"): "postgresql.cnpg.io_database_v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitor_v1.json",
}
NATS_RELEASE = "nats"  # the Helm release of deploy/kubernetes/nats/values.yaml
SEEDBED_POD = {"app.kubernetes.io/part-of": "seedbed"}


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize.render(KUBE / "overlays" / overlay))


def objects(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in rendered(overlay) if obj["kind"] == kind}


@cache
def example_secrets() -> dict[str, dict[str, str]]:
    docs = yaml.safe_load_all((KUBE / "secrets-example/secrets.yaml").read_text())
    return {doc["metadata"]["name"]: doc["stringData"] for doc in docs if doc}


def nats_values(name: str = "values.yaml") -> dict[str, Any]:
    return dict(yaml.safe_load((KUBE / "nats" / name).read_text()))


def validate(obj: dict[str, Any]) -> None:
    """Raise if the object does not match its schema (strict: unknown fields are errors)."""
    crd = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if crd is None:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        return
    schema = json.loads((CRDS / crd).read_text())
    jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)(schema).validate(obj)


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj["spec"]["template"]["spec"])


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet would make it, with example Secret values:
    the ConfigMap first (envFrom), then ``env`` in order, expanding ``$(NAME)`` references."""
    return expanded_env(container, config_maps={}, secrets=example_secrets())


def expanded_env(
    container: dict[str, Any], config_maps: dict[str, dict[str, str]], secrets: dict[str, dict[str, str]]
) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions with In) against a set of labels."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def admitted(overlay: str, labels: dict[str, str], port: int) -> list[dict[str, Any]]:
    """The peers the NetworkPolicies admit to a pod with ``labels`` on ``port``; a rule with no
    ``from`` admits everyone (returned as an empty peer)."""
    peers: list[dict[str, Any]] = []
    for policy in objects(overlay, "NetworkPolicy").values():
        if not selects(policy["spec"]["podSelector"], labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            peers.extend(rule.get("from") or [{}])
    return peers


def pod_labels(overlay: str, app: str) -> dict[str, str]:
    return dict(objects(overlay, "Deployment")[app]["spec"]["template"]["metadata"]["labels"])


# -- rendering and schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_the_whole_system(overlay: str) -> None:
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in rendered(overlay)}
    for app in APPS:
        for kind in (
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "ServiceMonitor",
        ):
            assert (kind, app) in kinds
        assert ("Job", f"{app}-migrate") in kinds
    assert ("Cluster", "seedbed-pg") in kinds and ("Namespace", "seedbed") in kinds
    assert {obj["metadata"].get("namespace", "seedbed") for obj in rendered(overlay)} == {"seedbed"}


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl is not installed: nothing to compare with"
)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_fallback_renderer_agrees_with_kubectl_kustomize(overlay: str) -> None:
    def by_name(docs: Any) -> dict[tuple[str, str], Any]:
        return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}

    assert by_name(kustomize.render_here(KUBE / "overlays" / overlay)) == by_name(rendered(overlay))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_its_schema(overlay: str) -> None:
    failures = []
    for obj in rendered(overlay):
        try:
            validate(obj)
        except Exception as exc:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc}"[:500])
    assert failures == []
    used = {(obj["apiVersion"], obj["kind"]) for obj in rendered(overlay)}
    assert set(CRD_SCHEMAS) <= used  # each CRD schema shipped is one the manifests need


@pytest.mark.parametrize(
    ("kind", "path", "bad"),
    [
        ("Deployment", ("spec", "replicas"), "two"),
        ("Deployment", ("spec", "template", "spec", "containers", 0, "readinessProbe", "httpGetx"), {}),
        ("NetworkPolicy", ("spec", "policyTypes"), "Ingress"),
        ("Cluster", ("spec", "instances"), "three"),
        ("Cluster", ("spec", "storage", "sizee"), "1Gi"),
        ("ServiceMonitor", ("spec", "endpoints"), {"port": "http"}),
    ],
)
def test_the_schemas_refuse_a_wrong_type_or_an_unknown_field(
    kind: str, path: tuple[Any, ...], bad: Any
) -> None:
    obj = copy.deepcopy(next(o for o in rendered("production") if o["kind"] == kind))
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    with pytest.raises(jsonschema.ValidationError):
        validate(obj)


# -- the processes -----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("app", APPS)
def test_each_deployment_probes_is_bounded_and_runs_unprivileged(overlay: str, app: str) -> None:
    deployment = objects(overlay, "Deployment")[app]
    pod = pod_spec(deployment)
    [container] = pod["containers"]
    assert {"name": "http", "containerPort": 8000} in container["ports"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert "memory" in container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["image"].startswith("ghcr.io/seedbed/seedbed:")
    assert container["command"][:2] == [
        "uvicorn",
        f"{SETTINGS[app].__module__.replace('settings', 'app')}:create_app",
    ]
    if app == "gateway":
        assert "--no-proxy-headers" in container["command"]  # forwarded headers: trusted proxies only
    assert selects(deployment["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    assert "replicas" not in deployment["spec"]  # the HorizontalPodAutoscaler owns the count


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("app", APPS)
def test_each_process_reaches_its_own_database_and_nats_with_settings_it_accepts(
    overlay: str, app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    [config] = objects(overlay, "ConfigMap").values()
    [container] = pod_spec(objects(overlay, "Deployment")[app])["containers"]
    env = expanded_env(container, {config["metadata"]["name"]: config["data"]}, example_secrets())
    for name in list(os.environ):
        if name.startswith(("SEEDBED_", "GATEWAY_", "DEMAND_", "ENTERPRISES_", "MENTORING_", "NATS_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = SETTINGS[app]()  # what the process reads at start (production refuses weak secrets)

    cluster = next(iter(objects(overlay, "Cluster").values()))
    match = re.fullmatch(r"postgresql\+asyncpg://([^:]+):([^@]+)@([^:/]+):5432/(\w+)", settings.database_url)
    assert match, settings.database_url
    user, password, host, database = match.groups()
    assert host == f"{cluster['metadata']['name']}-rw" and database == app
    # The role that owns this database is the one whose password Secret the process reads.
    owners = {db["spec"]["name"]: db["spec"]["owner"] for db in objects(overlay, "Database").values()}
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    owners[initdb["database"]] = initdb["owner"]
    role_secrets = {
        role["name"]: role["passwordSecret"]["name"] for role in cluster["spec"]["managed"]["roles"]
    }
    role_secrets[initdb["owner"]] = initdb["secret"]["name"]
    assert owners[app] == user
    secret = example_secrets()[role_secrets[user]]
    assert (secret["username"], secret["password"]) == (user, password)

    assert settings.nats_url == f"nats://{NATS_RELEASE}:4222"
    replicas = 3 if overlay == "production" else 1
    assert int(env["SEEDBED_STREAM_REPLICAS"]) == replicas
    values = nats_values("values.yaml" if overlay == "production" else "values-development.yaml")
    assert values["config"]["cluster"].get("replicas", 1) >= replicas
    assert settings.environment == ("production" if overlay == "production" else "development")
    assert (
        settings.internal_secret.get_secret_value()
        == example_secrets()["seedbed-internal"]["internal-secret"]
    )
    if app == "gateway":
        assert isinstance(settings, GatewaySettings)
        assert settings.rate_limit_store == "nats" and settings.shared_rate_limits
        assert settings.upstreams() == {name: f"http://{name}:8000" for name in APPS[1:]}


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("app", APPS)
def test_each_migration_job_runs_alembic_with_the_processes_settings(overlay: str, app: str) -> None:
    job = objects(overlay, "Job")[f"{app}-migrate"]
    [container] = pod_spec(job)["containers"]
    [web] = pod_spec(objects(overlay, "Deployment")[app])["containers"]
    assert container["command"][:3] == ["alembic", "-c", container["command"][2]]
    assert container["command"][3:] == ["upgrade", "head"]
    assert (ROOT / container["command"][2]).exists()
    assert container["env"] == web["env"] and container["envFrom"] == web["envFrom"]
    assert container["image"] == web["image"]
    assert (
        pod_spec(job)["securityContext"] == pod_spec(objects(overlay, "Deployment")[app])["securityContext"]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_and_config_map_referred_to_exists(overlay: str) -> None:
    secrets = example_secrets()
    config_maps = objects(overlay, "ConfigMap")
    referred: set[tuple[str, str | None]] = set()
    for kind in ("Deployment", "Job"):
        for obj in objects(overlay, kind).values():
            for container in pod_spec(obj)["containers"]:
                for source in container.get("envFrom", []):
                    assert source["configMapRef"]["name"] in config_maps
                for item in container.get("env", []):
                    ref = item.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        referred.add((ref["name"], ref["key"]))
    cluster = next(iter(objects(overlay, "Cluster").values()))
    for role in cluster["spec"]["managed"]["roles"]:
        referred |= {
            (role["passwordSecret"]["name"], "username"),
            (role["passwordSecret"]["name"], "password"),
        }
        assert secrets[role["passwordSecret"]["name"]]["username"] == role["name"]
    referred.add((cluster["spec"]["bootstrap"]["initdb"]["secret"]["name"], "password"))
    missing = sorted((name, key) for name, key in referred if name not in secrets or key not in secrets[name])
    assert missing == []
    if overlay == "development":  # it deploys the example; production makes them from a secret store
        assert set(secrets) == set(objects(overlay, "Secret"))
    else:
        assert objects(overlay, "Secret") == {}


# -- scaling, disruption, monitoring -----------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("app", APPS)
def test_each_process_scales_keeps_a_replica_through_disruption_and_is_scraped(
    overlay: str, app: str
) -> None:
    labels = pod_labels(overlay, app)
    hpa = objects(overlay, "HorizontalPodAutoscaler")[app]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": app}
    least = 2 if overlay == "production" else 1
    assert least <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pdb = objects(overlay, "PodDisruptionBudget")[app]
    assert selects(pdb["spec"]["selector"], labels) and pdb["spec"]["maxUnavailable"] == 1
    monitor = objects(overlay, "ServiceMonitor")[app]
    service = objects(overlay, "Service")[app]
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("http", "/metrics")]
    assert {"name": "http", "port": 8000, "targetPort": "http"} in service["spec"]["ports"]
    assert service["spec"]["selector"].items() <= labels.items()
    # Only this process's Service and ServiceMonitor select its pods.
    others = [
        n
        for n, s in objects(overlay, "Service").items()
        if n != app and selects({"matchLabels": s["spec"]["selector"]}, labels)
    ]
    assert others == []


# -- who may connect to what ---------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_admit_only_the_gateway_and_prometheus(overlay: str) -> None:
    gateway = pod_labels(overlay, "gateway")
    for app in ("enterprises", "demand", "mentoring"):
        peers = admitted(overlay, pod_labels(overlay, app), 8000)
        assert peers, app
        for peer in peers:
            assert peer, f"{app} admits everyone"
            if "podSelector" in peer:
                assert "namespaceSelector" not in peer and peer["podSelector"] == {
                    "matchLabels": {"app.kubernetes.io/name": "gateway"}
                }
            else:
                assert peer == {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
                }
        assert any(selects(peer.get("podSelector", {"matchLabels": {"-": "-"}}), gateway) for peer in peers)
        # Another service's pods are not admitted.
        for other in ("enterprises", "demand", "mentoring"):
            labels = pod_labels(overlay, other)
            assert not any("podSelector" in p and selects(p["podSelector"], labels) for p in peers)
    default = objects(overlay, "NetworkPolicy")["default-deny-ingress"]["spec"]
    assert default == {"podSelector": {}, "policyTypes": ["Ingress"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_and_postgres_admit_only_seedbeds_pods_and_their_own_peers(overlay: str) -> None:
    cluster = next(iter(objects(overlay, "Cluster").values()))["metadata"]["name"]
    stores = {
        4222: {"app.kubernetes.io/name": NATS_RELEASE, "app.kubernetes.io/instance": NATS_RELEASE},
        5432: {"cnpg.io/cluster": cluster, "cnpg.io/instanceRole": "primary"},
    }
    for port, labels in stores.items():
        peers = admitted(overlay, labels, port)
        assert peers and all(peers), port
        in_namespace = [p["podSelector"] for p in peers if "podSelector" in p]
        assert SEEDBED_POD in [s["matchLabels"] for s in in_namespace]
        for selector in in_namespace:
            # Seedbed's pods, or the store's own cluster peers: nothing else in the namespace.
            assert selector["matchLabels"] in (
                SEEDBED_POD,
                {k: v for k, v in labels.items() if k in selector["matchLabels"]},
            )
        for app in APPS:
            assert any(selects(s, pod_labels(overlay, app)) for s in in_namespace), app
        outside = [
            p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for p in peers
            if "namespaceSelector" in p
        ]
        assert set(outside) <= {"cnpg-system"}, outside  # the operator only (Prometheus scrapes other ports)


# -- NATS and PostgreSQL durability ------------------------------------------------------------


def test_production_nats_is_three_jetstream_servers_on_disk_whose_acks_survive_power_loss() -> None:
    values = nats_values()
    assert values["config"]["cluster"] == {"enabled": True, "replicas": 3}
    store = values["config"]["jetstream"]
    assert store["enabled"] and store["fileStore"]["enabled"] and store["fileStore"]["pvc"]["enabled"]
    assert store["merge"]["sync_interval"] == "always"
    spread = values["podTemplate"]["topologySpreadConstraints"]["topology.kubernetes.io/zone"]
    assert spread["whenUnsatisfiable"] == "DoNotSchedule"
    [config] = objects("production", "ConfigMap").values()
    assert config["data"]["SEEDBED_STREAM_REPLICAS"] == "3"
    text = (KUBE / "nats/values.yaml").read_text()
    assert "power" in text and "majority" in text  # the file says how, for the operator


def test_production_postgres_waits_for_a_synchronous_standby_in_another_zone() -> None:
    [cluster] = objects("production", "Cluster").values()
    spec = cluster["spec"]
    assert spec["instances"] == 3
    assert spec["postgresql"]["synchronous"]["number"] >= 1
    assert spec["postgresql"]["synchronous"]["dataDurability"] == "required"
    assert spec["affinity"]["topologyKey"] == "topology.kubernetes.io/zone"
    databases = {db["spec"]["name"] for db in objects("production", "Database").values()}
    assert databases | {spec["bootstrap"]["initdb"]["database"]} == set(APPS)  # one database per process


def nats_server_accepts(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "nats.conf"
    path.write_text(config)
    binary = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or "nats-server"
    return subprocess.run(
        [binary, "-c", str(path), "-t"], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize("values", ["values.yaml", "values-development.yaml"])
def test_the_jetstream_options_merged_by_the_helm_values_are_ones_nats_server_knows(
    values: str, tmp_path: Path
) -> None:
    merged = nats_values(values)["config"]["jetstream"].get("merge", {})
    options = "".join(f"  {key}: {value}\n" for key, value in merged.items())
    config = f"jetstream {{\n  store_dir: {tmp_path / 'js'}\n{options}}}\n"
    checked = nats_server_accepts(config, tmp_path)
    assert checked.returncode == 0 and "is valid" in checked.stdout + checked.stderr, checked.stderr
    # The check can fail: a misspelt option is refused.
    assert nats_server_accepts(config.replace("store_dir", "store_dirr"), tmp_path).returncode != 0


def test_the_compose_nats_configuration_is_valid_and_fsyncs_before_acking(tmp_path: Path) -> None:
    config = (ROOT / "deploy/nats/nats.conf").read_text().replace("/data/jetstream", str(tmp_path / "js"))
    checked = nats_server_accepts(config, tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert re.search(r"^\s*sync_interval: always$", config, re.MULTILINE)
