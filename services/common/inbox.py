"""The inbox: makes every consumer idempotent under at-least-once delivery.

A handler claims the event id in the same transaction as its effect. The claim inserts a row
keyed by `(consumer, event_id)`; when the row already exists, the event was applied before (a
redelivery after a crash, a rebalance, or an outbox relay republishing) and the handler skips
it. Because the claim commits or rolls back together with the effect, an effect is applied
exactly once, and the Kafka offset is committed only after that transaction.

    async with conn.transaction():
        if not await claim(conn, "records.commands", event.event_id):
            return  # already applied
        ...  # the domain change, and any follow-up outbox rows

Rows are pruned once they are older than the source topic's retention (a redelivery cannot be
older than that).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from datetime import timedelta
    from uuid import UUID

    from services.common.db import Connection

CLAIM_SQL: Final = """
INSERT INTO inbox (consumer, event_id) VALUES ($1, $2)
ON CONFLICT (consumer, event_id) DO NOTHING
RETURNING true
"""
PRUNE_SQL: Final = "DELETE FROM inbox WHERE processed_at < now() - $1::interval"


async def claim(conn: Connection, consumer: str, event_id: UUID) -> bool:
    """Claim `event_id` for `consumer`; True when new (apply the effect), False when a duplicate.

    Call it inside the transaction of the effect, before the effect. A concurrent claim of the
    same id by another transaction waits for that transaction and then returns False if it
    committed (or True if it rolled back).

    Args:
        conn: A connection of the service's pool, inside `conn.transaction()`.
        consumer: The consuming handler's stable name (one service may consume an event in
            several handlers, each applying its own effect).
        event_id: The event's id.
    """
    return bool(await conn.fetchval(CLAIM_SQL, consumer, event_id))


async def prune(conn: Connection, older_than: timedelta) -> int:
    """Delete claims older than `older_than` (the source topics' retention); the count deleted."""
    status = await conn.execute(PRUNE_SQL, older_than)
    return int(status.rsplit(" ", 1)[-1])
