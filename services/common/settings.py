"""The settings base every service extends with its own env prefix (e.g. `INTAKE_`).

Settings are read only here, never at import time elsewhere: `create_app(settings)` receives
them, so tests can build an app against whatever Kafka, Postgres and S3 they started.
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_PLACEHOLDERS = frozenset({"", "changeme", "change-me", "secret", "password"})


class ServiceSettings(BaseSettings):
    """Connection and runtime settings common to every service.

    Subclasses set `model_config = SettingsConfigDict(env_prefix="<SERVICE>_")` and add their
    own fields; each field carries a description so `--help` and the docs can show it.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    environment: Literal["development", "test", "production"] = Field(
        "development", description="Where this runs; production refuses placeholder secrets."
    )
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:19092", description="Kafka bootstrap servers, comma separated host:port."
    )
    kafka_security_protocol: Literal["SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "SASL_PLAINTEXT", description="Kafka security protocol (SCRAM over TLS in production)."
    )
    kafka_username: str = Field(description="This service's own Kafka SCRAM user.")
    kafka_password: SecretStr = Field(description="Password of the Kafka SCRAM user.")
    pg_dsn: SecretStr = Field(
        description="PostgreSQL DSN of this service's own role (owns just its schema)."
    )
    pg_pool_size: int = Field(10, ge=1, le=50, description="Maximum connections in the pool.")
    s3_endpoint: str = Field("127.0.0.1:18333", description="S3 server host:port.")
    s3_access_key: SecretStr = Field(
        SecretStr(""), description="This service's own S3 access key (empty: no S3 use)."
    )
    s3_secret_key: SecretStr = Field(SecretStr(""), description="Secret of the S3 access key.")
    s3_secure: bool = Field(default=False, description="Use TLS to the S3 server.")
    kek: SecretStr = Field(
        SecretStr(""),
        description="Key-encryption key (base64 of 32 bytes) wrapping per-customer data keys.",
    )
    transit_private_key: SecretStr = Field(
        SecretStr(""),
        description="This service's X25519 key (base64) for opening sealed command payloads.",
    )
    transit_public_keys: dict[str, str] = Field(
        default_factory=dict,
        description="Public transit keys (base64) by recipient service, for sealing payloads.",
    )
    topic_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description=(
            "Keys (base64 of 32 bytes) of the sealed command topics this service writes or "
            "reads, by topic name (JSON object)."
        ),
    )
    health_port: int = Field(0, ge=0, le=65535, description="Health/readiness port (0: off).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of the JSON logs."
    )
    max_retries: int = Field(
        3, ge=0, le=20, description="Attempts after the first before a message goes to the DLQ."
    )
    retry_backoff_ms: int = Field(
        200, ge=0, le=60_000, description="First retry delay; doubles per attempt."
    )

    @model_validator(mode="after")
    def _refuse_placeholders_in_production(self) -> Self:
        if self.environment == "production":
            for name in ("kafka_password", "pg_dsn"):
                value: SecretStr = getattr(self, name)
                if value.get_secret_value().lower() in _PLACEHOLDERS:
                    raise ValueError(f"{name} is a placeholder; set a real secret")
        return self

    def kek_bytes(self) -> bytes:
        """The key-encryption key as 32 raw bytes; a clear error when missing or malformed."""
        try:
            raw = base64.b64decode(self.kek.get_secret_value(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("kek is not valid base64") from exc
        if len(raw) != 32:
            raise ValueError("kek must be 32 bytes (base64 of 32 random bytes)")
        return raw
