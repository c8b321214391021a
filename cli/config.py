"""Where the CLI finds Kafka, PostgreSQL and its credentials.

The environment wins; otherwise the generated `.rekisteri/env` of a `make run` checkout (or the
file named by `REKISTERI_ENV_FILE`) is read. Credentials are never printed.
"""

from __future__ import annotations

import base64
import binascii
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ENV_FILE = Path(__file__).resolve().parent.parent / ".rekisteri" / "env"
KEK_BYTES = 32
"""Length of a key-encryption key."""


@dataclass(frozen=True)
class RecordsStore:
    """How the staff commands reach the register: the records role's DSN and the records KEK.

    Staff use the CLI on the clinic's server, where `make run` generated both. Neither is ever
    printed (`repr` hides them).
    """

    dsn: str = field(repr=False)
    kek: bytes = field(repr=False)


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a file of `[ -n "${K+x}" ] || export K='v'` (or `export K='v'`) lines."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        _, found, assignment = line.partition("export ")
        if found:
            key, _, value = assignment.partition("=")
            out[key] = shlex.split(value)[0] if value else ""
    return out


def load_environment() -> dict[str, str]:
    """The file's variables overlaid by the process environment."""
    path = Path(os.environ.get("REKISTERI_ENV_FILE", DEFAULT_ENV_FILE))
    return read_env_file(path) | dict(os.environ)


def kafka_args(env: dict[str, str], principal: str) -> dict[str, str]:
    """The aiokafka client arguments for a non-service principal (clinic-app, operator)."""
    var = principal.upper().replace("-", "_")
    try:
        password = env[f"REKISTERI_KAFKA_PASSWORD_{var}"]
        bootstrap = env["REKISTERI_KAFKA_BOOTSTRAP"]
    except KeyError:
        raise SystemExit(
            "rekisteri: no Kafka settings; start the system with `make run` or set "
            "REKISTERI_ENV_FILE to its env file"
        ) from None
    return {
        "bootstrap_servers": bootstrap,
        "security_protocol": env.get("REKISTERI_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": principal,
        "sasl_plain_password": password,
    }


def records_store(env: dict[str, str]) -> RecordsStore:
    """The register's connection settings (`RECORDS_PG_DSN`, `RECORDS_KEK`) from `env`.

    Raises:
        SystemExit: A setting is missing or the KEK is not base64 of 32 bytes (the message
            names the variable, never its value).
    """
    dsn = env.get("RECORDS_PG_DSN")
    kek_text = env.get("RECORDS_KEK")
    if not dsn or not kek_text:
        raise SystemExit(
            "rekisteri: no register settings (RECORDS_PG_DSN, RECORDS_KEK); run this on the "
            "clinic's server where `make run` generated them, or set REKISTERI_ENV_FILE"
        )
    try:
        kek = base64.b64decode(kek_text, validate=True)
    except (binascii.Error, ValueError):
        kek = b""
    if len(kek) != KEK_BYTES:
        raise SystemExit("rekisteri: RECORDS_KEK is not base64 of 32 bytes")
    return RecordsStore(dsn, kek)
