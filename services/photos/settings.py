"""The photos service's settings (environment prefix `PHOTOS_`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class PhotosSettings(ServiceSettings):
    """Settings of the photos service; every field can be set as `PHOTOS_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="PHOTOS_", extra="ignore", frozen=True)

    consumer_group_suffix: str | None = Field(
        None,
        description=(
            "Consume as group `photos.<suffix>` instead of `photos` (tests and replays; the "
            "principal may only use groups starting with its own name)."
        ),
    )
