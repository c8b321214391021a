"""The event envelope every Rekisteri event carries, and the registry of event types.

Every event is a frozen pydantic model: the envelope fields below plus its own payload fields.
Readers are tolerant (`extra="ignore"`) and changes are additive only; a breaking change is a
new `schema_version` (and, for topics, a new `.vN` topic). The Kafka key of every event about a
customer is its `customer_id`, the clinic's opaque customer number, never personal data.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


def new_event_id() -> UUID:
    """A fresh UUIDv7 (RFC 9562): time-ordered, so ids sort roughly by creation time.

    48 bits of Unix milliseconds, the version and variant bits, 74 random bits. Built directly
    as an integer: events are created by the thousand per second, and this is ~1 µs.
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10)) & _RAND_MASK
    return UUID(int=value | _VERSION_7)


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


_RAND_MASK = (1 << 80) - 1 ^ (0xF << 76) ^ (0x3 << 62)
_VERSION_7 = 0x7 << 76 | 0x2 << 62


EVENT_TYPES: dict[str, type[Event]] = {}
"""Every registered event type by name (filled as contract modules are imported)."""


class WireModel(BaseModel):
    """Base of every wire model: frozen, tolerant of unknown fields, documented."""

    model_config = ConfigDict(frozen=True, extra="ignore", use_attribute_docstrings=False)


class Event(WireModel):
    """Envelope fields common to every event; subclasses add `type` and their payload.

    A subclass declares `type: Literal["Name"] = "Name"` and `schema_version: Literal[N] = N`;
    it is then registered in `EVENT_TYPES` under its type name for decoding.
    """

    event_id: UUID = Field(
        default_factory=new_event_id,
        description="Unique id of this event (UUIDv7); consumers deduplicate on it.",
    )
    type: str = Field(description="The event type name, e.g. CustomerRegistered.")
    schema_version: int = Field(1, ge=1, description="Version of this event type's schema.")
    occurred_at: datetime = Field(
        default_factory=utcnow, description="When it happened (UTC, ISO 8601)."
    )
    correlation_id: UUID = Field(
        default_factory=new_event_id,
        description="Id shared by every event caused by the same original request.",
    )
    customer_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
        description="The clinic's customer number (asiakasnumero); also the Kafka key.",
    )
    producer: str = Field(description="Name of the service or app that produced the event.")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:  # noqa: ANN401
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.model_fields.get("type")
        default = field.default if field is not None else None
        if isinstance(default, str) and default:
            EVENT_TYPES[default] = cls

    def to_bytes(self) -> bytes:
        """Serialise to compact UTF-8 JSON, as it goes on the wire."""
        return self.model_dump_json().encode()
