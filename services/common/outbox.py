"""The transactional outbox: events written with the domain change, relayed to Kafka after commit.

A service never publishes to Kafka from a handler. It calls `enqueue()` (or `enqueue_event()`)
inside the same transaction as the domain change, so the event exists if and only if the change
committed. The `OutboxRelay` of the service publishes the rows with an idempotent producer
(`acks=all`), keyed by customer, and deletes them once the broker has acknowledged them, so no
personal data stays behind. A crash between the acknowledgement and the delete publishes the
event again; the consumers' inbox (`services.common.inbox`) absorbs such duplicates.

Ordering: one relay per schema is active at a time (a session advisory lock; the others wait on
standby and take over when the holder's connection goes away). It reads committed rows in
`position` order and sends the events of one key strictly one after the other, each awaited
before the next, so the events of a customer reach Kafka in the order their transactions
committed, provided writers serialise per customer (consume a partition sequentially, or lock
the customer row before writing the outbox row), which every service does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Final, Protocol

import asyncpg
from aiokafka.errors import KafkaTimeoutError

from services.common.db import check_schema

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

    from contracts.envelope import Event
    from services.common.db import Connection, Pool

log = logging.getLogger(__name__)

CHANNEL_SUFFIX: Final = "_outbox"
"""NOTIFY channel of a schema's outbox: `<schema>_outbox`."""

# One round trip: the insert and the wake-up. NOTIFY is delivered only when the transaction
# commits (and not at all if it rolls back), which is exactly when the relay should look.
ENQUEUE_SQL: Final = """
WITH row AS (
    INSERT INTO outbox (event_id, topic, key, headers, payload, aggregate_type, event_type)
    VALUES ($1, $2, $3, $4::text::jsonb, $5, $6, $7)
)
SELECT pg_notify(current_schema() || '_outbox', '')
"""

# Why `ORDER BY position` over the committed rows, and no cursor:
# - A cursor such as `position > last_seen` would skip rows for ever: sequence values are taken
#   at insert time but become visible at commit, so a slow transaction can commit a row *below*
#   the cursor. The relay keeps no cursor: it deletes what it published, and every committed
#   row is seen by a later read, whatever its position.
# - For one key, writers are serialised (a partition is consumed sequentially, or the customer
#   row is locked first), so the second transaction inserts its row only after the first one
#   committed: its `position` is larger, and whenever it is visible the first row is visible
#   too (or already published). Position order is therefore commit order per key.
# - Deliberately NOT `WHERE txid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY txid`: that
#   is the right filter for a cursor over txids, but here it would *break* per-key order. A
#   transaction is given its txid at its first write (an inbox claim, or `SELECT ... FOR
#   UPDATE` even before it waits for the lock), so the later writer of a key can hold the
#   smaller txid: ordering by txid then publishes its event first, and the xmin filter can
#   release it while the earlier writer's row is still held back behind an unrelated open
#   transaction. The filter would also stall every outbox of the cluster behind any one long
#   transaction. The `txid` column is kept for diagnostics and a future cursor/CDC reader.
FETCH_SQL: Final = """
SELECT event_id, topic, key, headers::text AS headers, payload
FROM outbox
ORDER BY position
LIMIT $1
"""
DELETE_SQL: Final = "DELETE FROM outbox WHERE event_id = ANY($1::uuid[])"
LOCK_KEY_SQL: Final = "hashtextextended('rekisteri.outbox_relay.' || $1::text, 0)"
TRY_LOCK_SQL: Final = f"SELECT pg_try_advisory_lock({LOCK_KEY_SQL})"
UNLOCK_SQL: Final = f"SELECT pg_advisory_unlock({LOCK_KEY_SQL})"
PENDING_SQL: Final = "SELECT count(*) FROM outbox"


class Producer(Protocol):
    """What the relay needs of a Kafka producer (`aiokafka.AIOKafkaProducer` has it).

    `send_and_wait` returns once the broker has acknowledged the record (`acks=all`), or raises.
    """

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:  # noqa: ANN401 - aiokafka returns its RecordMetadata, unused here
        """Send one record and wait for the broker's acknowledgement."""


class OutboxError(RuntimeError):
    """An outbox call was used wrongly (a programming error)."""


async def enqueue(  # noqa: PLR0913 - the outbox row's columns, all keyword-only
    conn: Connection,
    *,
    topic: str,
    key: str | None,
    payload: bytes,
    event_id: UUID,
    event_type: str,
    headers: dict[str, str] | None = None,
    aggregate_type: str = "customer",
) -> None:
    """Write one event to the outbox, inside the caller's open transaction.

    The relay publishes it after the transaction commits; if the transaction rolls back, it
    never existed. `event_id` and `event_type` are also sent as headers, after `headers`.

    Args:
        conn: A connection of the service's pool, inside `conn.transaction()`.
        topic: The Kafka topic (from the catalog).
        key: The Kafka key: the customer number for customer data, never personal data.
        payload: The record value (for events, the JSON bytes of the envelope).
        event_id: The event's id; publishing the same id twice is refused by the primary key.
        event_type: The event type name.
        headers: Extra headers (no personal data), e.g. content type and correlation id.
        aggregate_type: What the key identifies (Debezium's `aggregatetype`).

    Raises:
        OutboxError: When called outside a transaction.
    """
    if not conn.is_in_transaction():
        raise OutboxError("enqueue() must run inside the transaction of the domain change")
    all_headers = dict(headers or {})
    all_headers |= {"event_id": str(event_id), "event_type": event_type}
    await conn.execute(
        ENQUEUE_SQL,
        event_id,
        topic,
        key,
        json.dumps(all_headers),
        payload,
        aggregate_type,
        event_type,
    )


async def enqueue_event(
    conn: Connection,
    *,
    topic: str,
    event: Event,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Write a contract event to the outbox, keyed by its `customer_id` unless `key` is given.

    The payload is the event's JSON; the headers carry the content type and correlation id the
    way FastStream reads them.
    """
    event_headers = {
        "content-type": "application/json",
        "correlation_id": str(event.correlation_id),
    }
    await enqueue(
        conn,
        topic=topic,
        key=key if key is not None else event.customer_id,
        payload=event.to_bytes(),
        event_id=event.event_id,
        event_type=event.type,
        headers=event_headers | (headers or {}),
    )


def channel(schema: str) -> str:
    """The NOTIFY channel of a schema's outbox."""
    return check_schema(schema) + CHANNEL_SUFFIX


_TRANSIENT: Final = (
    KafkaTimeoutError,
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.TransactionRollbackError,
)


def _transient(exc: BaseException) -> bool:
    """Whether a failure is worth retrying (broker or database briefly unavailable)."""
    return isinstance(exc, _TRANSIENT) or bool(getattr(exc, "retriable", False))


class OutboxRelay:
    """Publishes a schema's outbox to Kafka; one instance per schema is active at a time.

    Run it as a task next to the service (`task = create_task(relay.run())`) and call
    `stop()` on shutdown. `run()` returns after `stop()`; transient broker and database
    failures are retried with backoff; any other error (an authorisation failure, a record too
    large, a closed producer) is raised, so the service fails visibly instead of silently
    stalling its outbox.

    Args:
        pool: The service's pool (one connection is held while active).
        producer: An idempotent producer (`enable_idempotence=True`, `acks="all"`), started.
        schema: The service's schema, whose `outbox` is relayed.
        batch_size: Rows read, published and deleted per round.
        poll_interval: Seconds between reads when no NOTIFY arrives (the fallback).
        standby_interval: Seconds between attempts to become active while another is.
        max_backoff: Upper bound of the retry delay after a transient failure.
        name: A label for logs, to tell instances apart.
    """

    def __init__(  # noqa: PLR0913 - tuning knobs, all keyword-only
        self,
        pool: Pool,
        producer: Producer,
        *,
        schema: str,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        standby_interval: float = 1.0,
        max_backoff: float = 30.0,
        name: str = "relay",
    ) -> None:
        self._pool = pool
        self._producer = producer
        self.schema = check_schema(schema)
        self.name = name
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._standby_interval = standby_interval
        self._max_backoff = max_backoff
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._active = asyncio.Event()
        self.published = 0
        """Events published and deleted by this instance (for tests and metrics)."""

    @property
    def is_active(self) -> bool:
        """Whether this instance holds the schema's relay lock right now."""
        return self._active.is_set()

    async def wait_active(self) -> None:
        """Wait until this instance is the active relay."""
        await self._active.wait()

    def stop(self) -> None:
        """Ask `run()` to return after the current batch (its rows are then published)."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Relay until `stop()`: on standby while another instance is active, else publish."""
        delay = 0.5
        while not self._stopping.is_set():
            try:
                led = await self._attempt()
            except Exception as exc:
                if not _transient(exc):
                    log.exception("outbox relay %s of schema %s failed", self.name, self.schema)
                    raise
                log.warning(
                    "outbox relay %s of schema %s: transient %s, retrying in %.1f s",
                    self.name,
                    self.schema,
                    type(exc).__name__,
                    delay,
                    extra={"reason": type(exc).__name__},
                )
                await self._pause(delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            delay = 0.5
            if not led:
                await self._pause(self._standby_interval)
        log.info("outbox relay %s of schema %s stopped", self.name, self.schema)

    async def _attempt(self) -> bool:
        """Try to become active; if so, relay until stopped. False when another is active."""
        async with self._pool.acquire() as conn:
            if not await conn.fetchval(TRY_LOCK_SQL, self.schema):
                return False
            try:
                await self._lead(conn)
            finally:
                self._active.clear()
                # Best effort: if the connection is broken, the server has already released
                # the lock with the session, and the pool's reset unlocks it otherwise.
                if not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.remove_listener(channel(self.schema), self._on_notify)
                        await conn.fetchval(UNLOCK_SQL, self.schema)
            return True

    async def _lead(self, conn: Connection) -> None:
        await conn.add_listener(channel(self.schema), self._on_notify)
        self._active.set()
        pending = await conn.fetchval(PENDING_SQL)
        log.info(
            "outbox relay %s is active for schema %s (%s events pending)",
            self.name,
            self.schema,
            pending,
            extra={"count": pending},
        )
        while not self._stopping.is_set():
            # Clear before reading: a NOTIFY arriving during the round sets it again, so the
            # next wait returns at once instead of missing that commit.
            self._wake.clear()
            if await self._round(conn) < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_interval):
                        await self._wake.wait()

    def _on_notify(self, *_args: object) -> None:
        self._wake.set()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _round(self, conn: Connection) -> int:
        """Publish and delete one batch; the number of rows read."""
        rows = await conn.fetch(FETCH_SQL, self._batch_size)
        if not rows:
            return 0
        started = time.monotonic()
        acked, error = await publish_in_key_order(self._producer, rows)
        if acked:
            await conn.execute(DELETE_SQL, acked)
            self.published += len(acked)
        elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        log.debug(
            "outbox relay %s of schema %s: published %d of %d events in %.1f ms",
            self.name,
            self.schema,
            len(acked),
            len(rows),
            elapsed_ms,
            extra={"count": len(acked), "duration_ms": elapsed_ms},
        )
        if error is not None:
            raise error
        return len(rows)


async def publish_in_key_order(
    producer: Producer, rows: Sequence[asyncpg.Record]
) -> tuple[list[UUID], Exception | None]:
    """Publish outbox rows: keys concurrently, the rows of one key strictly in order.

    Each record is awaited (acknowledged) before the next of its key is sent, and a key stops
    at its first failure, so a later event of a customer never reaches Kafka before an earlier
    one, even when a send fails or the relay dies mid-batch and another republishes the rest.

    Args:
        producer: The idempotent producer.
        rows: Outbox rows (`event_id`, `topic`, `key`, `headers` as JSON text, `payload`) in
            position order.

    Returns:
        The ids of the acknowledged rows, and the failure of the first row that was not
        acknowledged (by position), if any.
    """
    chains: dict[object, list[asyncpg.Record]] = defaultdict(list)
    for index, row in enumerate(rows):
        # Rows without a key have no order to keep: each is a chain of its own.
        chains[row["key"] if row["key"] is not None else index].append(row)
    first_failure: dict[UUID, Exception] = {}

    async def send_chain(chain: list[asyncpg.Record]) -> list[UUID]:
        acked: list[UUID] = []
        for row in chain:
            headers = json.loads(row["headers"])
            try:
                await producer.send_and_wait(
                    row["topic"],
                    value=bytes(row["payload"]),
                    key=row["key"].encode() if row["key"] is not None else None,
                    headers=[(k, str(v).encode()) for k, v in headers.items()],
                )
            except Exception as exc:  # noqa: BLE001 - reported to the caller, key stops here
                first_failure[row["event_id"]] = exc
                break
            acked.append(row["event_id"])
        return acked

    results = await asyncio.gather(*(send_chain(c) for c in chains.values()))
    acked = [event_id for chain in results for event_id in chain]
    error = next(
        (first_failure[r["event_id"]] for r in rows if r["event_id"] in first_failure), None
    )
    return acked, error
