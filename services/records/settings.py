"""The records service's settings (environment prefix `RECORDS_`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class RecordsSettings(ServiceSettings):
    """Settings of the records service; every field can be set as `RECORDS_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="RECORDS_", extra="ignore", frozen=True)

    batch_max_records: int = Field(
        500,
        ge=1,
        le=10_000,
        description=(
            "Most commands taken from one poll and applied in one transaction (one commit, "
            "one fsync per batch)."
        ),
    )
    batch_timeout_ms: int = Field(
        10,
        ge=0,
        le=10_000,
        description=(
            "How long a poll waits for commands when none are buffered; FastStream "
            "also sleeps this long after an empty poll: up to twice it is added to latency."
        ),
    )
    consumer_group_suffix: str | None = Field(
        None,
        description=(
            "Consume as group `records.<suffix>` instead of `records` (tests and replays; the "
            "principal may only use groups starting with its own name)."
        ),
    )
