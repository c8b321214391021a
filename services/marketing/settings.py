"""The marketing service's settings (environment prefix `MARKETING_`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class MarketingSettings(ServiceSettings):
    """Settings of the marketing service; every field can be set as `MARKETING_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="MARKETING_", extra="ignore", frozen=True)

    consumer_group_suffix: str | None = Field(
        None,
        description=(
            "Consume as group `marketing.<suffix>` instead of `marketing` (tests and replays; "
            "the principal may only use groups starting with its own name)."
        ),
    )
