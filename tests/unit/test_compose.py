"""docker-compose.yml matches the code: every service runs, configured by what its settings read.

Compose cannot run on the project's machines (no Docker engine), so this test is its guard: it
parses the file and checks the topology, the healthchecks, and that each environment variable a
service gets (from compose and from the provisioned env file) is one its settings class reads.
"""

from __future__ import annotations

import importlib
import inspect
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.provision import service_env
from services.common.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text("utf-8"))
SERVICES = COMPOSE["services"]
PACKAGES = sorted(
    p.parent.name for p in (REPO / "services").glob("*/__main__.py") if p.parent.name != "common"
)
INFRA = ("kafka", "postgres", "seaweedfs")


def settings_class(service: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"services.{service}.settings")
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, ServiceSettings) and obj is not ServiceSettings
    ]
    assert len(found) == 1, f"services.{service}.settings must define one settings class"
    return found[0]


def env_names(cls: type[ServiceSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    return {(prefix + name).upper() for name in cls.model_fields}


def test_infrastructure_images_and_healthchecks() -> None:
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:4.4")
    assert SERVICES["seaweedfs"]["image"].startswith("chrislusf/seaweedfs")
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    for name in INFRA:
        assert "healthcheck" in SERVICES[name], name


def test_every_dependency_waits_for_health_or_completion() -> None:
    for name, svc in SERVICES.items():
        depends = svc.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for dep, cond in depends.items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            assert cond["condition"] in {
                "service_healthy",
                "service_completed_successfully",
            }, f"{name} -> {dep}"
            if dep in INFRA:
                assert cond["condition"] == "service_healthy"


def test_init_containers_provision_from_the_catalog() -> None:
    assert "deploy.provision" in " ".join(SERVICES["secrets-init"]["command"])
    assert SERVICES["kafka-init"]["build"]["target"] == "kafka-provisioner"
    assert SERVICES["init"]["command"][-2:] == ["postgres", "s3"]


@pytest.mark.parametrize("service", PACKAGES)
def test_every_service_package_has_a_compose_service(service: str) -> None:
    assert service in SERVICES, f"services/{service} has no compose service"
    svc = SERVICES[service]
    assert f"services.{service}" in " ".join(svc["command"])
    assert svc["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert "healthcheck" in svc


@pytest.mark.parametrize("service", PACKAGES)
def test_compose_variables_are_read_by_the_settings(service: str) -> None:
    names = env_names(settings_class(service))
    compose_vars = set(SERVICES[service].get("environment", {}))
    assert compose_vars, f"{service}: compose sets no variables"
    assert compose_vars <= names, f"{service}: not read: {sorted(compose_vars - names)}"


@pytest.mark.parametrize("service", PACKAGES)
def test_provisioned_variables_are_read_by_the_settings(service: str) -> None:
    fake: defaultdict[str, str] = defaultdict(lambda: "x")
    provided = set(service_env(service, fake))
    names = env_names(settings_class(service))
    assert provided <= names, f"{service}: not read: {sorted(provided - names)}"
    required = {
        (str(settings_class(service).model_config.get("env_prefix", "")) + n).upper()
        for n, f in settings_class(service).model_fields.items()
        if f.is_required()
    }
    assert required <= provided, f"{service}: never provided: {sorted(required - provided)}"


def test_no_service_without_a_package() -> None:
    runnable = {
        name
        for name, svc in SERVICES.items()
        if "services." in " ".join(svc.get("command", []) or [])
    }
    assert runnable == set(PACKAGES)
