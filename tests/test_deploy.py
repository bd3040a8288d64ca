"""The deployment files hold together: compose validates, manifests probe and run as non-root."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
APPS = ("enterprises", "demand", "mentoring", "gateway")


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_docker_compose_validates_against_the_compose_specification() -> None:
    schema = json.loads((ROOT / "tests/data/compose/compose-spec.json").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose()), key=str)
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []


def test_compose_runs_migrations_before_each_app_and_checks_readiness() -> None:
    services = compose()["services"]
    for app in APPS:
        assert services[f"migrate-{app}"]["restart"] == "no"
        assert services[app]["depends_on"][f"migrate-{app}"]["condition"] == "service_completed_successfully"
        assert "/readyz" in " ".join(services[app]["healthcheck"]["test"])
    assert "SEEDBED_INTERNAL_SECRET" in services["gateway"]["environment"]
    assert {"nats-0", "nats-1", "nats-2", "postgres"} <= services.keys()


def test_every_file_the_compose_file_mounts_exists() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    assert (ROOT / "deploy/Dockerfile").exists()


@pytest.mark.parametrize("app", APPS)
def test_kubernetes_manifest_migrates_probes_and_runs_unprivileged(app: str) -> None:
    docs = list(yaml.safe_load_all((ROOT / f"deploy/k8s/{app}.yaml").read_text()))
    kinds = {doc["kind"]: doc for doc in docs}
    assert set(kinds) == {"Job", "Deployment", "Service"}
    assert kinds["Job"]["spec"]["template"]["spec"]["containers"][0]["command"][:2] == ["alembic", "-c"]
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert kinds["Deployment"]["spec"]["replicas"] >= 2


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((ROOT / "deploy/k8s/kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (ROOT / "deploy/k8s" / resource).exists()
    assert {f"{app}.yaml" for app in APPS} <= set(kustomization["resources"])
