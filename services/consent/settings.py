"""The consent service's settings (environment prefix `CONSENT_`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class ConsentSettings(ServiceSettings):
    """Settings of the consent service; every field can be set as `CONSENT_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="CONSENT_", extra="ignore", frozen=True)

    consumer_group_suffix: str | None = Field(
        None,
        description=(
            "Consume as group `consent.<suffix>` instead of `consent` (tests and replays; the "
            "principal may only use groups starting with its own name)."
        ),
    )
