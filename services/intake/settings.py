"""Intake's settings: the common service settings under the `INTAKE_` prefix, plus batching.

Read only by `__main__` (from the environment) and by tests (from keyword arguments); the app
itself receives them, so nothing is read at import time.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    """Settings of the intake service (environment variables `INTAKE_*`).

    `transit_private_key` opens the submissions clinic apps seal to intake;
    `transit_public_keys` must name every owner intake forwards to (today `records`).
    """

    model_config = SettingsConfigDict(env_prefix="INTAKE_", extra="ignore", frozen=True)

    batch_max_records: int = Field(
        500,
        ge=1,
        le=10_000,
        description="Most submissions taken from one poll and applied in one transaction.",
    )
    batch_timeout_ms: int = Field(
        10,
        ge=0,
        le=10_000,
        description=(
            "How long one poll waits for submissions when none are buffered; FastStream "
            "also sleeps this long after an empty poll: up to twice it is added to latency."
        ),
    )
    consumer_group_suffix: str | None = Field(
        None,
        description=(
            "Consume as group `intake.<suffix>` instead of `intake` (tests and replays; the "
            "group must start with the principal's name to be allowed)."
        ),
    )
