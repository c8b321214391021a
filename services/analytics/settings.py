"""The analytics service's settings (environment prefix `ANALYTICS_`)."""

from __future__ import annotations

import base64
import binascii

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings

MIN_KEY_BYTES = 32
"""The shortest pseudonym key accepted (HMAC-SHA256 wants at least its output size)."""


class AnalyticsSettings(ServiceSettings):
    """Settings of the analytics service; every field can be set as `ANALYTICS_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="ANALYTICS_", extra="ignore", frozen=True)

    pseudonym_key: SecretStr = Field(
        description=(
            "Key (base64 of at least 32 random bytes) of the keyed hash that pseudonymises "
            "customer numbers: HMAC-SHA256(key, customer_id). Rotating it unlinks every "
            "contribution already held."
        ),
    )
    consumer_group_suffix: str | None = Field(
        None,
        description=(
            "Consume as group `analytics.<suffix>` instead of `analytics` (tests and replays; "
            "the principal may only use groups starting with its own name)."
        ),
    )

    def pseudonym_key_bytes(self) -> bytes:
        """The pseudonym key as raw bytes; a clear error (never the key) when malformed.

        Checked when the service starts (building an app, e.g. for its AsyncAPI document,
        needs no usable key).
        """
        try:
            raw = base64.b64decode(self.pseudonym_key.get_secret_value(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("pseudonym_key is not valid base64") from exc
        if len(raw) < MIN_KEY_BYTES:
            raise ValueError("pseudonym_key must be at least 32 bytes (base64)")
        return raw
