"""Provision the infrastructure from the catalog in `contracts/`: least privilege from day one.

Each service gets its own Kafka SCRAM user with ACLs on just the topics it produces or consumes
and its own consumer groups, its own Postgres role owning just its schema, and its own S3
identity on just its buckets. Local secrets are generated once into the state folder
(`.rekisteri/secrets.env`, mode 0600) and never committed.

Usage: python -m deploy.provision secrets|s3-config|kafka|postgres|s3|env|all
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

import asyncpg
from minio import Minio

from contracts.sealing import TopicKey, generate_keypair

if TYPE_CHECKING:
    from collections.abc import Callable
from contracts.topics import (
    AUDITOR,
    BUCKETS,
    CLINIC_APP,
    OPERATOR,
    SEALED_COMMAND_TOPICS,
    SERVICES,
    all_topics,
    topic,
)

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
STATE: Final = Path(os.environ.get("REKISTERI_STATE", REPO_ROOT / ".rekisteri"))
CACHE: Final = Path(
    os.environ.get(
        "REKISTERI_CACHE",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rekisteri",
    )
)
KAFKA_VERSION: Final = os.environ.get("KAFKA_VERSION", "4.4.0")
KAFKA_PORT: Final = int(os.environ.get("REKISTERI_KAFKA_PORT", "19092"))
PG_PORT: Final = int(os.environ.get("REKISTERI_PG_PORT", "15432"))
S3_PORT: Final = int(os.environ.get("REKISTERI_S3_PORT", "18333"))
# Hosts: loopback natively; compose sets the container names (kafka, postgres, seaweedfs).
KAFKA_HOST: Final = os.environ.get("REKISTERI_KAFKA_HOST", "127.0.0.1")
PG_HOST: Final = os.environ.get("REKISTERI_PG_HOST", "127.0.0.1")
S3_HOST: Final = os.environ.get("REKISTERI_S3_HOST", "127.0.0.1")
HEALTH_BASE_PORT: Final = int(os.environ.get("REKISTERI_HEALTH_BASE_PORT", "18100"))
DATABASE: Final = "rekisteri"
COMPACTION_MS: Final = os.environ.get("REKISTERI_COMPACTION_MS")

KAFKA_PRINCIPALS: Final = (*SERVICES, CLINIC_APP, OPERATOR, AUDITOR)
SEALED_RECIPIENTS: Final = ("intake", "records", "consent", "photos", "rights")
"""Services that receive sealed personal data on their command topics (see contracts.sealing)."""
SECRETS_FILE: Final = STATE / "secrets.env"
ENV_FILE: Final = STATE / "env"


def _var(name: str) -> str:
    return name.upper().replace("-", "_")


def pg_role(service: str) -> str:
    """The Postgres role of a service."""
    return f"svc_{service}"


def load_secrets() -> dict[str, str]:
    """Read the generated secrets (KEY=VALUE lines)."""
    out: dict[str, str] = {}
    for line in SECRETS_FILE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value.strip("'")
    return out


def _access_key(name: str) -> str:
    return f"{name}{secrets.token_hex(6)}"


def _wanted_secrets() -> dict[str, Callable[[], str]]:
    """Every secret the system needs, with how to generate it."""

    def pw() -> str:
        return secrets.token_urlsafe(24)

    def key32() -> str:
        return base64.b64encode(secrets.token_bytes(32)).decode()

    wanted: dict[str, Callable[[], str]] = {
        "KAFKA_ADMIN_PASSWORD": pw,
        "PG_ADMIN_PASSWORD": pw,
        "S3_ADMIN_ACCESS_KEY": partial(_access_key, "admin"),
        "S3_ADMIN_SECRET_KEY": pw,
        "REKISTERI_KEK": key32,
        "ANALYTICS_PSEUDONYM_KEY": key32,
    }
    for principal in KAFKA_PRINCIPALS:
        wanted[f"KAFKA_PASSWORD_{_var(principal)}"] = pw
    for name in SEALED_COMMAND_TOPICS:
        wanted[f"TOPIC_KEY_{_var(name.replace('.', '_'))}"] = TopicKey.generate
    for service in SERVICES:
        wanted[f"PG_PASSWORD_{_var(service)}"] = pw
        wanted[f"S3_ACCESS_KEY_{_var(service)}"] = partial(_access_key, service)
        wanted[f"S3_SECRET_KEY_{_var(service)}"] = pw
    return wanted


def generate_secrets() -> None:
    """Create missing local secrets; existing ones are kept (rotating would lock data out)."""
    STATE.mkdir(parents=True, exist_ok=True)
    values = load_secrets() if SECRETS_FILE.exists() else {}
    added = 0
    for name, make in _wanted_secrets().items():
        if name not in values:
            values[name] = make()
            added += 1
    for service in SEALED_RECIPIENTS:
        if f"TRANSIT_PRIVATE_{_var(service)}" not in values:
            private, public = generate_keypair()
            values[f"TRANSIT_PRIVATE_{_var(service)}"] = private
            values[f"TRANSIT_PUBLIC_{_var(service)}"] = public
            added += 1
    if not added:
        return
    tmp = SECRETS_FILE.with_suffix(".tmp")
    tmp.write_text(
        "# Local secrets generated on first start. Never commit; delete with `make clean`.\n"
        + "".join(f"{k}='{v}'\n" for k, v in values.items()),
        encoding="utf-8",
    )
    tmp.chmod(0o600)
    tmp.rename(SECRETS_FILE)
    pg_pw = STATE / "postgres" / "admin-password"
    pg_pw.parent.mkdir(parents=True, exist_ok=True)
    pg_pw.write_text(values["PG_ADMIN_PASSWORD"], encoding="utf-8")
    pg_pw.chmod(0o640)
    print(f"provision: generated {added} local secrets in {SECRETS_FILE}")


def s3_config() -> None:
    """Write SeaweedFS's identities: an admin, and each service on just its buckets."""
    sec = load_secrets()
    identities: list[dict[str, object]] = [
        {
            "name": "admin",
            "credentials": [
                {"accessKey": sec["S3_ADMIN_ACCESS_KEY"], "secretKey": sec["S3_ADMIN_SECRET_KEY"]}
            ],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
    ]
    for service in SERVICES:
        buckets = [b for b, owners in BUCKETS.items() if service in owners]
        identities.append(
            {
                "name": service,
                "credentials": [
                    {
                        "accessKey": sec[f"S3_ACCESS_KEY_{_var(service)}"],
                        "secretKey": sec[f"S3_SECRET_KEY_{_var(service)}"],
                    }
                ],
                "actions": [f"{a}:{b}" for b in buckets for a in ("Read", "Write", "List")],
            }
        )
    path = STATE / "s3" / "identities.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"identities": identities}, indent=2), encoding="utf-8")
    path.chmod(0o600)


def kafka_plan() -> str:
    """Render the Kafka plan (topics, users, ACLs) for deploy/kafka/Provision.java."""
    sec = load_secrets()
    compaction = int(COMPACTION_MS) if COMPACTION_MS else None
    lines = ["# generated from contracts/topics.py"]
    for t in all_topics():
        conf = ",".join(f"{k}={v}" for k, v in t.config(compaction_ms=compaction).items())
        lines.append(f"topic {t.name} {t.partitions} {conf}")
    lines.extend(
        f"user {principal} {sec[f'KAFKA_PASSWORD_{_var(principal)}']}"
        for principal in KAFKA_PRINCIPALS
    )
    for t in all_topics():
        lines.extend(
            f"acl User:{p} TOPIC LITERAL {t.name} {op}"
            for p in t.producers
            for op in ("WRITE", "DESCRIBE")
        )
        lines.extend(
            f"acl User:{c} TOPIC LITERAL {t.name} {op}"
            for c in t.consumers
            for op in ("READ", "DESCRIBE")
        )
        # Operators see every topic's offsets (for lag), but read only the DLQs.
        lines.append(f"acl User:{OPERATOR} TOPIC LITERAL {t.name} DESCRIBE")
    # Each principal's consumer groups are named `<principal>` or `<principal>.<suffix>`.
    lines.extend(f"acl User:{p} GROUP PREFIXED {p} READ" for p in KAFKA_PRINCIPALS)
    lines.extend(f"acl User:{OPERATOR} GROUP PREFIXED {s} DESCRIBE" for s in SERVICES)
    lines.append(f"acl User:{OPERATOR} CLUSTER LITERAL kafka-cluster DESCRIBE")
    return "\n".join(dict.fromkeys(lines)) + "\n"


def write_kafka_plan() -> tuple[Path, Path]:
    """Write the Kafka admin client properties and the plan into the state folder."""
    sec = load_secrets()
    kdir = STATE / "kafka"
    kdir.mkdir(parents=True, exist_ok=True)
    admin = kdir / "admin.properties"
    admin.write_text(
        f"bootstrap.servers={KAFKA_HOST}:{KAFKA_PORT}\n"
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="admin" password="{sec["KAFKA_ADMIN_PASSWORD"]}";\n',
        encoding="utf-8",
    )
    admin.chmod(0o600)
    plan = kdir / "plan.txt"
    plan.write_text(kafka_plan(), encoding="utf-8")
    plan.chmod(0o600)
    return admin, plan


def provision_kafka() -> None:
    """Create topics, SCRAM users and ACLs with one run of the Java Admin client."""
    admin, plan = write_kafka_plan()
    lib = CACHE / f"kafka-{KAFKA_VERSION}" / "lib"
    subprocess.run(  # noqa: S603
        [  # noqa: S607
            "java",
            "-Xmx256m",
            "-Dlog4j2.configurationFile=" + str(REPO_ROOT / "deploy/kafka/log4j2-quiet.properties"),
            "-cp",
            f"{lib}/*",
            str(REPO_ROOT / "deploy/kafka/Provision.java"),
            str(admin),
            str(plan),
        ],
        check=True,
    )


async def _provision_postgres() -> None:
    sec = load_secrets()
    admin_dsn = f"postgresql://postgres:{sec['PG_ADMIN_PASSWORD']}@{PG_HOST}:{PG_PORT}/postgres"
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(admin_dsn.rsplit("/", 1)[0] + f"/{DATABASE}")
    try:
        await conn.execute(
            f"""
            REVOKE ALL ON DATABASE "{DATABASE}" FROM PUBLIC;
            REVOKE ALL ON SCHEMA public FROM PUBLIC;
            """
        )
        for service in SERVICES:
            role = pg_role(service)
            password = sec[f"PG_PASSWORD_{_var(service)}"]
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            verb = "ALTER" if exists else "CREATE"
            # Passwords are generated url-safe tokens; quote_literal guards anyway.
            quoted = await conn.fetchval("SELECT quote_literal($1)", password)
            await conn.execute(
                f"{verb} ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                f"CONNECTION LIMIT 60 PASSWORD {quoted}"
            )
            await conn.execute(
                f"""
                GRANT CONNECT, TEMPORARY ON DATABASE "{DATABASE}" TO {role};
                CREATE SCHEMA IF NOT EXISTS {service} AUTHORIZATION {role};
                ALTER SCHEMA {service} OWNER TO {role};
                REVOKE ALL ON SCHEMA {service} FROM PUBLIC;
                ALTER ROLE {role} IN DATABASE "{DATABASE}" SET search_path = {service};
                """
            )
    finally:
        await conn.close()
    print(f"postgres: database {DATABASE}, {len(SERVICES)} roles each owning its schema")


def provision_s3() -> None:
    """Create the buckets (as admin); access is fixed by the identities file."""
    sec = load_secrets()
    client = Minio(
        f"{S3_HOST}:{S3_PORT}",
        access_key=sec["S3_ADMIN_ACCESS_KEY"],
        secret_key=sec["S3_ADMIN_SECRET_KEY"],
        secure=False,
    )
    for bucket in BUCKETS:
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
    print(f"s3: buckets {', '.join(BUCKETS)}")


def topic_keys_for(principal: str, sec: dict[str, str]) -> dict[str, str]:
    """The keys of the sealed command topics a principal writes or reads (and no others)."""
    return {
        name: sec[f"TOPIC_KEY_{_var(name.replace('.', '_'))}"]
        for name in SEALED_COMMAND_TOPICS
        if principal in topic(name).producers or principal in topic(name).consumers
    }


def service_env(service: str, sec: dict[str, str]) -> dict[str, str]:
    """The environment one service process runs with (its own credentials only)."""
    p = _var(service)
    env = {
        f"{p}_KAFKA_BOOTSTRAP_SERVERS": f"{KAFKA_HOST}:{KAFKA_PORT}",
        f"{p}_KAFKA_USERNAME": service,
        f"{p}_KAFKA_PASSWORD": sec[f"KAFKA_PASSWORD_{p}"],
        f"{p}_PG_DSN": (
            f"postgresql://{pg_role(service)}:{sec[f'PG_PASSWORD_{p}']}"
            f"@{PG_HOST}:{PG_PORT}/{DATABASE}"
        ),
        f"{p}_S3_ENDPOINT": f"{S3_HOST}:{S3_PORT}",
        f"{p}_S3_ACCESS_KEY": sec[f"S3_ACCESS_KEY_{p}"],
        f"{p}_S3_SECRET_KEY": sec[f"S3_SECRET_KEY_{p}"],
        f"{p}_KEK": sec["REKISTERI_KEK"],
        f"{p}_HEALTH_PORT": str(HEALTH_BASE_PORT + 1 + SERVICES.index(service)),
    }
    if service in SEALED_RECIPIENTS:
        env[f"{p}_TRANSIT_PRIVATE_KEY"] = sec[f"TRANSIT_PRIVATE_{p}"]
    env[f"{p}_TRANSIT_PUBLIC_KEYS"] = json.dumps(
        {r: sec[f"TRANSIT_PUBLIC_{_var(r)}"] for r in SEALED_RECIPIENTS}, separators=(",", ":")
    )
    env[f"{p}_TOPIC_KEYS"] = json.dumps(topic_keys_for(service, sec), separators=(",", ":"))
    if service == "analytics":
        env[f"{p}_PSEUDONYM_KEY"] = sec["ANALYTICS_PSEUDONYM_KEY"]
    return env


def write_env() -> None:
    """Write `.rekisteri/env`: every service's settings plus the endpoints tests and tools need."""
    sec = load_secrets()
    env: dict[str, str] = {
        "REKISTERI_KAFKA_BOOTSTRAP": f"{KAFKA_HOST}:{KAFKA_PORT}",
        "REKISTERI_KAFKA_ADMIN_PASSWORD": sec["KAFKA_ADMIN_PASSWORD"],
        "REKISTERI_PG_ADMIN_DSN": (
            f"postgresql://postgres:{sec['PG_ADMIN_PASSWORD']}@{PG_HOST}:{PG_PORT}/{DATABASE}"
        ),
        "REKISTERI_S3_ENDPOINT": f"{S3_HOST}:{S3_PORT}",
        "REKISTERI_S3_ADMIN_ACCESS_KEY": sec["S3_ADMIN_ACCESS_KEY"],
        "REKISTERI_S3_ADMIN_SECRET_KEY": sec["S3_ADMIN_SECRET_KEY"],
        "REKISTERI_KEK": sec["REKISTERI_KEK"],
    }
    env["REKISTERI_INTAKE_PUBLIC_KEY"] = sec["TRANSIT_PUBLIC_INTAKE"]
    env["REKISTERI_OPERATOR_TOPIC_KEYS"] = json.dumps(
        topic_keys_for(OPERATOR, sec), separators=(",", ":")
    )
    for principal in (CLINIC_APP, OPERATOR, AUDITOR):
        env[f"REKISTERI_KAFKA_PASSWORD_{_var(principal)}"] = sec[
            f"KAFKA_PASSWORD_{_var(principal)}"
        ]
    for service in SERVICES:
        env |= service_env(service, sec)
    # Each service process gets a file of its own variables only (least privilege at run time).
    services_dir = STATE / "services"
    services_dir.mkdir(parents=True, exist_ok=True)
    for service in SERVICES:
        own = service_env(service, sec)
        path = services_dir / f"{service}.env"
        path.write_text(
            "".join(f"[ -n \"${{{k}+x}}\" ] || export {k}='{v}'\n" for k, v in own.items()),
            encoding="utf-8",
        )
        path.chmod(0o600)
    ENV_FILE.write_text(
        "# Generated by deploy/provision.py from .rekisteri/secrets.env; sourced by make.\n"
        "# A variable already set in the environment wins (compose and tests override some).\n"
        + "".join(f"[ -n \"${{{k}+x}}\" ] || export {k}='{v}'\n" for k, v in env.items()),
        encoding="utf-8",
    )
    ENV_FILE.chmod(0o600)


def main(argv: list[str]) -> int:
    """Run the named provisioning steps in order."""
    steps = {
        "secrets": generate_secrets,
        "s3-config": s3_config,
        "kafka-plan": write_kafka_plan,
        "kafka": provision_kafka,
        "postgres": lambda: asyncio.run(_provision_postgres()),
        "s3": provision_s3,
        "env": write_env,
    }
    names = argv or ["all"]
    if names == ["all"]:
        names = ["secrets", "s3-config", "kafka", "postgres", "s3", "env"]
    for name in names:
        if name not in steps:
            print(f"unknown step {name!r}; choose from {', '.join(steps)} or all", file=sys.stderr)
            return 2
        steps[name]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
