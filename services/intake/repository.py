"""Intake's storage: the inbox claims and the outbox rows of a batch, in one transaction.

Intake owns no domain tables. What it writes per submission is an inbox claim of the
submission's `event_id` (a repeated id is a no-op) and one outbox row (the command for the
owner, or the rejection), both in the transaction of the whole batch: one round trip claims
every id of the batch, one more inserts every outbox row and wakes the relay. The tables are
the common `inbox` and `outbox` (`services/common/migrations/0001_outbox_inbox.sql`).

`IntakeRepository` is the port the handler uses; `PostgresIntakeRepository` implements it on
the service's pool, and tests use an in-memory fake with the same behaviour.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from services.common.outbox import OutboxError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from contextlib import AbstractAsyncContextManager
    from uuid import UUID

    from services.common.db import Connection, Pool

CONSUMER: Final = "intake"
"""Intake's name in the inbox (`consumer` column)."""

CLAIM_MANY_SQL: Final = """
INSERT INTO inbox (consumer, event_id)
SELECT $1, id FROM unnest($2::uuid[]) AS id
ON CONFLICT (consumer, event_id) DO NOTHING
RETURNING event_id
"""

# One statement for the whole batch: rows get their `position` in the order given (ORDER BY
# ordinality), so per-key order in the outbox is the order of the submissions; NOTIFY reaches
# the relay only when the transaction commits.
ENQUEUE_MANY_SQL: Final = """
WITH rows AS (
    INSERT INTO outbox (event_id, topic, key, headers, payload, event_type)
    SELECT r.event_id, r.topic, r.key, r.headers::jsonb, r.payload, r.event_type
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[])
        WITH ORDINALITY AS r (event_id, topic, key, headers, payload, event_type, n)
    ORDER BY r.n
)
SELECT pg_notify(current_schema() || '_outbox', '')
"""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One event for the outbox: where it goes and its bytes (sealed or PII-free).

    Attributes:
        event_id: The outbox row's id (a forwarded command keeps the submission's id).
        topic: The Kafka topic.
        key: The Kafka key (the customer number), or None when no usable one is known.
        payload: The record value.
        event_type: The event type name (also a header).
        correlation_id: Sent as a header, the way FastStream reads it.
    """

    event_id: UUID
    topic: str
    key: str | None
    payload: bytes = field(repr=False)
    event_type: str
    correlation_id: UUID | None = None

    def headers_json(self) -> str:
        """The row's headers as JSON text (content type, correlation, event id and type)."""
        headers = {"content-type": "application/json"}
        if self.correlation_id is not None:
            headers["correlation_id"] = str(self.correlation_id)
        headers |= {"event_id": str(self.event_id), "event_type": self.event_type}
        return json.dumps(headers, separators=(",", ":"))


class IntakeUnit(Protocol):
    """The writes of one transaction."""

    async def claim(self, event_ids: Sequence[UUID]) -> set[UUID]:
        """Claim submission ids in the inbox; the ids that were new (not seen before).

        An id given twice is returned once: the caller applies its first occurrence only.
        """

    async def enqueue(self, rows: Sequence[OutboxRow]) -> None:
        """Write outbox rows, in order, published by the relay after the commit."""


class IntakeRepository(Protocol):
    """Intake's storage port."""

    def transaction(self) -> AbstractAsyncContextManager[IntakeUnit]:
        """A unit of work: everything in it commits together, or nothing does."""


class PoolSource(Protocol):
    """Anything that hands out the service's pool once it has started (`ServiceContext`)."""

    @property
    def pool(self) -> Pool:
        """The pool."""


class PostgresIntakeUnit:
    """`IntakeUnit` on one connection inside an open transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def claim(self, event_ids: Sequence[UUID]) -> set[UUID]:
        """Claim the ids with one statement; the ids that were new."""
        if not event_ids:
            return set()
        rows = await self._conn.fetch(CLAIM_MANY_SQL, CONSUMER, list(event_ids))
        return {row["event_id"] for row in rows}

    async def enqueue(self, rows: Sequence[OutboxRow]) -> None:
        """Insert the rows with one statement and wake the relay (on commit).

        Raises:
            OutboxError: When called outside a transaction.
        """
        if not rows:
            return
        if not self._conn.is_in_transaction():
            raise OutboxError("enqueue() must run inside the transaction of the claims")
        await self._conn.execute(
            ENQUEUE_MANY_SQL,
            [row.event_id for row in rows],
            [row.topic for row in rows],
            [row.key for row in rows],
            [row.headers_json() for row in rows],
            [row.payload for row in rows],
            [row.event_type for row in rows],
        )


class PostgresIntakeRepository:
    """`IntakeRepository` on the service's pool (taken from `source` when first used)."""

    def __init__(self, source: PoolSource) -> None:
        self._source = source

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[IntakeUnit]:
        """One connection and one transaction; commits when the block ends without error."""
        async with self._source.pool.acquire() as conn, conn.transaction():
            yield PostgresIntakeUnit(conn)
