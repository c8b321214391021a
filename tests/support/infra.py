"""Find the real Kafka, PostgreSQL and S3 server for the real test tier.

Endpoints come from the environment first (`make infra-up` writes them to `.rekisteri/env`,
which `make test` exports and which is read here when the variables are absent). Without them
the real tier fails with a clear message when `CI` is set, and is skipped with that message on
a developer machine: it never silently skips under CI. (No Docker engine runs on the project's
machines, so the native servers are the real tier; testcontainers is not used yet.)
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from contracts.topics import SERVICES

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_FILE = Path(os.environ.get("REKISTERI_ENV_FILE", REPO_ROOT / ".rekisteri" / "env"))


def _load_env_file() -> dict[str, str]:
    if not ENV_FILE.exists():
        return {}
    out: dict[str, str] = {}
    for line in ENV_FILE.read_text(encoding="utf-8").splitlines():
        _, found, assignment = line.partition("export ")
        if found:
            key, _, value = assignment.partition("=")
            out[key] = shlex.split(value)[0] if value else ""
    return out


@dataclass(frozen=True)
class Infra:
    """Endpoints and credentials of the running infrastructure."""

    env: dict[str, str]

    @property
    def kafka_bootstrap(self) -> str:
        """Kafka bootstrap servers."""
        return self.env["REKISTERI_KAFKA_BOOTSTRAP"]

    @property
    def pg_admin_dsn(self) -> str:
        """Superuser DSN of the rekisteri database (tests only; services never get it)."""
        return self.env["REKISTERI_PG_ADMIN_DSN"]

    @property
    def s3_endpoint(self) -> str:
        """S3 server host:port."""
        return self.env["REKISTERI_S3_ENDPOINT"]

    def kafka_password(self, principal: str) -> str:
        """Password of a Kafka principal (a service, clinic-app, operator, auditor or admin)."""
        if principal == "admin":
            return self.env["REKISTERI_KAFKA_ADMIN_PASSWORD"]
        var = principal.upper().replace("-", "_")
        if principal in SERVICES:
            return self.env[f"{var}_KAFKA_PASSWORD"]
        return self.env[f"REKISTERI_KAFKA_PASSWORD_{var}"]

    def kafka_client_args(self, principal: str) -> dict[str, str]:
        """Keyword arguments for aiokafka clients authenticating as `principal`."""
        return {
            "bootstrap_servers": self.kafka_bootstrap,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": principal,
            "sasl_plain_password": self.kafka_password(principal),
        }

    def pg_dsn(self, service: str) -> str:
        """DSN of a service's own Postgres role."""
        return self.env[f"{service.upper()}_PG_DSN"]

    def s3_keys(self, service: str) -> tuple[str, str]:
        """(access key, secret key) of a service's S3 identity, or the admin's."""
        if service == "admin":
            return (
                self.env["REKISTERI_S3_ADMIN_ACCESS_KEY"],
                self.env["REKISTERI_S3_ADMIN_SECRET_KEY"],
            )
        p = service.upper()
        return self.env[f"{p}_S3_ACCESS_KEY"], self.env[f"{p}_S3_SECRET_KEY"]

    def service_env(self, service: str) -> dict[str, str]:
        """The environment variables of one service (its prefix only)."""
        prefix = service.upper() + "_"
        return {k: v for k, v in self.env.items() if k.startswith(prefix)}


def find_infra() -> Infra:
    """The running infrastructure, or a clear failure (CI) / skip (developer machine)."""
    env = _load_env_file() | {
        k: v for k, v in os.environ.items() if k.startswith("REKISTERI_") or "_" in k
    }
    if "REKISTERI_KAFKA_BOOTSTRAP" in env and "REKISTERI_PG_ADMIN_DSN" in env:
        return Infra(env)
    message = (
        "the real tier needs Kafka, PostgreSQL and S3: run `make infra-up` (or `make test`, "
        "which starts them); no Docker engine is used on this machine"
    )
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
