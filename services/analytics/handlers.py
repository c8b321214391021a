"""Analytics' Kafka entry points: register entries in, consent and stop directives through the feed.

- `records.customer.v1` (compacted): each customer's current register entry. Its clear
  metadata becomes a contribution keyed by the customer's pseudonym, unless the customer is
  excluded or their consent refuses analytics; a tombstone deletes their contributions. A
  record that cannot be read is dead-lettered by the broker's retry/DLQ middleware.
- `consent.state.v1` and `privacy.directives.v1`: the shared consent feed (`consent_feed`):
  an analytics withdrawal or objection deletes the customer's contributions and excludes them,
  answered on `privacy.acks.v1` in the same transaction; fail closed on a record that cannot
  be applied.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from faststream.kafka.annotations import KafkaMessage  # noqa: TC002 - FastStream reads it
from pydantic import ValidationError

from contracts.records import CUSTOMER_TOPIC, CustomerRecord
from services.analytics.domain import ANALYTICS, SERVICE, contribution_of
from services.analytics.repository import STOP_RESOURCE, AnalyticsStore
from services.common.kafka import PermanentError, RetryPolicy, subscriber_kwargs
from services.consentview.feed import (
    ConsentFeed,
    Processor,
    key_customer,
    make_dead_letter,
    register_feed,
    transactions,
)

if TYPE_CHECKING:
    from aiokafka import ConsumerRecord
    from faststream.kafka import KafkaBroker
    from faststream.message import StreamMessage

    from services.analytics.settings import AnalyticsSettings
    from services.common.db import Connection
    from services.common.runtime import ServiceContext

__all__ = [
    "PROCESSOR",
    "SERVICE",
    "Ingested",
    "PseudonymKey",
    "apply_customer_record",
    "decode_customer_record",
    "register",
]

PROCESSOR: Final = Processor(SERVICE, STOP_RESOURCE)
"""Analytics as a consent-driven processor: analytics and web analytics."""


class Ingested(StrEnum):
    """What a register entry did."""

    ADDED = "added"
    STALE = "stale"
    EXCLUDED = "excluded"
    FORGOTTEN = "forgotten"


def decode_customer_record(record: ConsumerRecord[Any, Any]) -> tuple[str, CustomerRecord | None]:
    """The customer and register entry of a `records.customer.v1` record (None: a tombstone).

    Raises:
        PermanentError: `key_invalid`, `not_json`, `unexpected_type`, `invalid_record` or
            `key_mismatch`; never quoting the content.
    """
    customer_id = key_customer(record)
    if customer_id is None:
        raise PermanentError("key_invalid")
    if record.value is None:
        return customer_id, None
    try:
        wire = json.loads(record.value)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
        raise PermanentError("not_json") from None
    if not isinstance(wire, dict) or wire.get("type") != "CustomerRecord":
        raise PermanentError("unexpected_type")
    try:
        entry = CustomerRecord.model_validate(wire)
    except ValidationError:
        raise PermanentError("invalid_record") from None
    if entry.customer_id != customer_id:
        raise PermanentError("key_mismatch")
    return customer_id, entry


async def apply_customer_record(
    store: AnalyticsStore, customer_id: str, entry: CustomerRecord | None
) -> Ingested:
    """Turn a register entry into a contribution, under the customer's consent-view lock."""
    row = await store.lock(customer_id)
    if entry is None:
        await store.forget_contributions(customer_id)
        return Ingested.FORGOTTEN
    if await store.excluded(customer_id) or (row.known and ANALYTICS not in row.allowed):
        return Ingested.EXCLUDED
    added = await store.add_contribution(customer_id, contribution_of(entry))
    return Ingested.ADDED if added else Ingested.STALE


async def _raw_record(msg: StreamMessage[Any]) -> Any:  # noqa: ANN401 - FastStream's decoder type
    return msg.raw_message


class PseudonymKey:
    """The pseudonym key, parsed on first use (building an app parses none)."""

    def __init__(self, settings: AnalyticsSettings) -> None:
        self._settings = settings
        self._key: bytes | None = None

    @property
    def key(self) -> bytes:
        """The key's raw bytes.

        Raises:
            ValueError: The configured key is not base64 of at least 32 bytes.
        """
        if self._key is None:
            self._key = self._settings.pseudonym_key_bytes()
        return self._key

    def store(self, conn: Connection) -> AnalyticsStore:
        """Analytics' store on a connection, keyed by this key."""
        return AnalyticsStore(conn, self.key)


def register(
    broker: KafkaBroker, ctx: ServiceContext, settings: AnalyticsSettings, key: PseudonymKey
) -> None:
    """Attach the subscribers to the broker (called once, when the app is built)."""
    feed = ConsentFeed(
        PROCESSOR,
        transactions(ctx, key.store),
        make_dead_letter(broker, SERVICE),
        RetryPolicy.from_settings(settings),
    )
    register_feed(broker, feed, group_suffix=settings.consumer_group_suffix)

    @broker.subscriber(
        CUSTOMER_TOPIC,
        decoder=_raw_record,
        title=f"{CUSTOMER_TOPIC}:{SERVICE}",
        description="Register entries; only their clear metadata is kept, by pseudonym.",
        **subscriber_kwargs(SERVICE, suffix=settings.consumer_group_suffix),
    )
    async def handle_customer_record(msg: KafkaMessage) -> None:
        customer_id, entry = decode_customer_record(msg.raw_message)
        async with ctx.pool.acquire() as conn, conn.transaction():
            await apply_customer_record(key.store(conn), customer_id, entry)
