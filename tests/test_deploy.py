"""The deployment files hold together: compose validates and migrates first (the Kubernetes
manifests are checked in tests/test_kubernetes.py)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
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
