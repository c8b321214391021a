"""Where the register is kept: the `RegisterRepository` protocol, PostgreSQL, and a fake.

The PostgreSQL implementation works on one connection inside the caller's transaction, so a
batch's inbox claims, register rows, audit events and snapshots commit together. Every write
of a batch is one statement however many commands it holds (arrays through `unnest`, new item
versions with COPY, outbox rows pipelined with `executemany`); only the customers' data keys
are fetched one customer at a time, because `crypto.KeyStore` has no bulk call yet.

Customers are serialised by their row: a batch first inserts the rows it lacks, then locks all
of them `FOR UPDATE` in customer-number order (no deadlock between two batches), and only then
reads their items. Two consumers of one customer (during a rebalance) therefore apply their
commands one batch after the other, and the outbox publishes in that order.

The fake keeps the same data in dictionaries (no transactions) and runs the same test cases.
`load_customer` and `load_history` are the read API the staff CLI uses.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import replace
from typing import TYPE_CHECKING, Final, Protocol

from services.common import crypto, outbox
from services.records.domain import (
    FEEDBACK_CONTEXT,
    VISIT_CONTEXT,
    CustomerCipher,
    CustomerRow,
    CustomerView,
    ItemVersion,
    StoredEntry,
    StoredItem,
    build_view,
    open_versions,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

    import asyncpg

    from contracts.envelope import Event
    from services.common.db import Connection
    from services.records.domain import BatchPlan

INBOX_CONSUMER: Final = "records.commands"
"""The inbox consumer name of the command handler."""

CLAIM_SQL: Final = """
INSERT INTO inbox (consumer, event_id)
SELECT $1, id FROM unnest($2::uuid[]) AS t(id)
ON CONFLICT (consumer, event_id) DO NOTHING
RETURNING event_id
"""
"""Claim many event ids at once; returns those not claimed before (to apply)."""

CREATE_CUSTOMERS_SQL: Final = """
INSERT INTO customers (customer_id)
SELECT id FROM unnest($1::text[]) AS t(id) ORDER BY id
ON CONFLICT (customer_id) DO NOTHING
"""
"""Create the rows of customers seen for the first time (version 0 until the batch ends)."""

LOCK_CUSTOMERS_SQL: Final = """
SELECT customer_id, version, registered_at, data_classes, created_at, updated_at
FROM customers
WHERE customer_id = ANY($1::text[])
ORDER BY customer_id
FOR UPDATE
"""
"""Lock the batch's customers, in a fixed order, and read their rows."""

ITEM_COLUMNS: Final = """
customer_id, kind, seq, value, digest, source, data_class, valid_from, valid_to, event_id,
closed_by, recorded_at
"""

CURRENT_ITEMS_SQL: Final = """
SELECT customer_id, kind, seq, value, digest, source, data_class, valid_from, event_id
FROM customer_items
WHERE customer_id = ANY($1::text[]) AND valid_to IS NULL
"""
"""The current item versions of some customers."""

BATCH_VISITS_SQL: Final = """
SELECT customer_id, event_id, entry, source, data_class, occurred_at
FROM visits
WHERE customer_id = ANY($1::text[])
"""
"""The stored visits of some customers (their months go into the snapshots' analytics facts)."""

CLOSE_ITEMS_SQL: Final = """
UPDATE customer_items AS i
SET valid_to = c.valid_to, closed_by = c.closed_by
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::uuid[])
    AS c(customer_id, kind, seq, valid_to, closed_by)
WHERE i.customer_id = c.customer_id AND i.kind = c.kind AND i.seq = c.seq
    AND i.valid_to IS NULL
"""
"""Close current item versions (they stop being current)."""

ITEMS_TABLE: Final = "customer_items"
ITEM_COPY_COLUMNS: Final = (
    "customer_id",
    "kind",
    "seq",
    "value",
    "digest",
    "source",
    "data_class",
    "valid_from",
    "valid_to",
    "event_id",
    "closed_by",
)
"""Columns of new item versions, copied in (some already closed by a later command)."""

INSERT_VISITS_SQL: Final = """
INSERT INTO visits (customer_id, event_id, entry, source, data_class, occurred_at)
SELECT * FROM unnest(
    $1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]
)
"""

INSERT_FEEDBACK_SQL: Final = """
INSERT INTO feedback
    (customer_id, event_id, kind, channel, body, source, data_class, occurred_at)
SELECT * FROM unnest(
    $1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::timestamptz[]
)
"""

UPDATE_CUSTOMERS_SQL: Final = """
UPDATE customers AS c
SET version = u.version,
    registered_at = coalesce(c.registered_at, u.registered_at),
    data_classes = u.data_classes::text[],
    updated_at = now()
FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::text[])
    AS u(customer_id, version, registered_at, data_classes)
WHERE c.customer_id = u.customer_id
"""
"""Store the customers' versions after the batch (data classes as `{a,b}` array literals)."""

CUSTOMER_SQL: Final = """
SELECT customer_id, version, registered_at, data_classes, created_at, updated_at
FROM customers
WHERE customer_id = $1 AND version > 0
"""

ITEMS_SQL: Final = f"""
SELECT {ITEM_COLUMNS} FROM customer_items WHERE customer_id = $1 ORDER BY kind, seq
"""

ITEM_HISTORY_SQL: Final = f"""
SELECT {ITEM_COLUMNS} FROM customer_items WHERE customer_id = $1 AND kind = $2 ORDER BY seq
"""

VISITS_SQL: Final = """
SELECT customer_id, event_id, entry, source, data_class, occurred_at, recorded_at
FROM visits WHERE customer_id = $1
"""

FEEDBACK_SQL: Final = """
SELECT customer_id, event_id, kind, channel, body, source, data_class, occurred_at, recorded_at
FROM feedback WHERE customer_id = $1
"""


class RegisterRepository(Protocol):
    """What the register's use cases need of storage; writes join the caller's transaction."""

    async def claim(self, event_ids: Sequence[UUID]) -> set[UUID]:
        """Claim event ids in the inbox; the ones never claimed before (to apply)."""

    async def lock_customers(self, customer_ids: Sequence[str]) -> dict[str, CustomerRow]:
        """Create the missing customers (version 0), lock them all, and return their rows."""

    async def current_items(self, customer_ids: Sequence[str]) -> list[StoredItem]:
        """The current item versions of the customers."""

    async def visits(self, customer_ids: Sequence[str]) -> list[StoredEntry]:
        """The stored visits of the customers."""

    async def data_keys(self, customer_ids: Sequence[str]) -> dict[str, crypto.DataKey]:
        """The customers' data keys, created on first use.

        Raises:
            crypto.KeyShreddedError: One of the customers was erased.
        """

    async def read_key(self, customer_id: str) -> crypto.DataKey | None:
        """The customer's data key, or None when they have none or it was shredded."""

    async def save(self, plan: BatchPlan) -> None:
        """Write a batch: close item versions, insert new ones and entries, bump customers."""

    async def publish(self, events: Sequence[tuple[str, Event]]) -> None:
        """Enqueue events to the outbox, in order, as `(topic, event)` keyed by customer."""

    async def customer(self, customer_id: str) -> CustomerRow | None:
        """A customer's row, or None when the register has nothing on them."""

    async def items(self, customer_id: str, kind: str | None = None) -> list[StoredItem]:
        """Every version of a customer's items (of one kind), by kind then `seq`."""

    async def entries(self, customer_id: str) -> list[StoredEntry]:
        """A customer's visits and feedback."""


def _item(row: asyncpg.Record) -> StoredItem:
    return StoredItem(
        customer_id=row["customer_id"],
        kind=row["kind"],
        seq=row["seq"],
        value=row["value"],
        digest=bytes(row["digest"]),
        source=row["source"],
        data_class=row["data_class"],
        valid_from=row["valid_from"],
        valid_to=row["valid_to"],
        event_id=row["event_id"],
        closed_by=row["closed_by"],
        recorded_at=row["recorded_at"],
    )


def _customer(row: asyncpg.Record) -> CustomerRow:
    return CustomerRow(
        customer_id=row["customer_id"],
        version=row["version"],
        registered_at=row["registered_at"],
        data_classes=frozenset(row["data_classes"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _item_record(x: StoredItem) -> tuple[object, ...]:
    return (
        x.customer_id,
        x.kind,
        x.seq,
        x.value,
        x.digest,
        x.source,
        x.data_class,
        x.valid_from,
        x.valid_to,
        x.event_id,
        x.closed_by,
    )


def _array_literal(values: frozenset[str]) -> str:
    """A text[] literal of plain codes (data class names need no quoting)."""
    return "{" + ",".join(sorted(values)) + "}"


def outbox_row(topic: str, event: Event) -> tuple[object, ...]:
    """The arguments of `outbox.ENQUEUE_SQL` for an event, as `outbox.enqueue_event` makes them.

    Keyed by the event's `customer_id`, with the content type and correlation id as headers
    and then `event_id` and `event_type`.
    """
    headers = {
        "content-type": "application/json",
        "correlation_id": str(event.correlation_id),
        "event_id": str(event.event_id),
        "event_type": event.type,
    }
    return (
        event.event_id,
        topic,
        event.customer_id,
        json.dumps(headers),
        event.to_bytes(),
        "customer",
        event.type,
    )


class PostgresRegister:
    """The register in the service's schema, on one connection (inside a transaction to write).

    Args:
        conn: A connection of the service's pool.
        keys: The service's key store (`ctx.keys`).
        consumer: The inbox consumer name.
    """

    def __init__(
        self, conn: Connection, keys: crypto.KeyStore, *, consumer: str = INBOX_CONSUMER
    ) -> None:
        self.conn = conn
        self.keys = keys
        self.consumer = consumer

    async def claim(self, event_ids: Sequence[UUID]) -> set[UUID]:
        """Claim event ids in the inbox; the ones never claimed before (to apply)."""
        rows = await self.conn.fetch(CLAIM_SQL, self.consumer, list(event_ids))
        return {row["event_id"] for row in rows}

    async def lock_customers(self, customer_ids: Sequence[str]) -> dict[str, CustomerRow]:
        """Create the missing customers (version 0), lock them all, and return their rows."""
        ids = sorted(set(customer_ids))
        await self.conn.execute(CREATE_CUSTOMERS_SQL, ids)
        rows = await self.conn.fetch(LOCK_CUSTOMERS_SQL, ids)
        return {row["customer_id"]: _customer(row) for row in rows}

    async def current_items(self, customer_ids: Sequence[str]) -> list[StoredItem]:
        """The current item versions of the customers."""
        if not customer_ids:
            return []
        rows = await self.conn.fetch(CURRENT_ITEMS_SQL, list(customer_ids))
        return [
            StoredItem(
                customer_id=r["customer_id"],
                kind=r["kind"],
                seq=r["seq"],
                value=r["value"],
                digest=r["digest"],
                source=r["source"],
                data_class=r["data_class"],
                valid_from=r["valid_from"],
                event_id=r["event_id"],
            )
            for r in rows
        ]

    async def visits(self, customer_ids: Sequence[str]) -> list[StoredEntry]:
        """The stored visits of the customers (one query; none asked: no query)."""
        if not customer_ids:
            return []
        rows = await self.conn.fetch(BATCH_VISITS_SQL, list(customer_ids))
        return [
            StoredEntry(
                customer_id=r["customer_id"],
                event_id=r["event_id"],
                context=VISIT_CONTEXT,
                body=r["entry"],
                source=r["source"],
                data_class=r["data_class"],
                occurred_at=r["occurred_at"],
            )
            for r in rows
        ]

    async def data_keys(self, customer_ids: Sequence[str]) -> dict[str, crypto.DataKey]:
        """The customers' data keys, created on first use (in the caller's transaction)."""
        return await self.keys.get_or_create_many(self.conn, customer_ids)

    async def read_key(self, customer_id: str) -> crypto.DataKey | None:
        """The customer's data key, or None when they have none or it was shredded."""
        return await self.keys.get(self.conn, customer_id)

    async def save(self, plan: BatchPlan) -> None:
        """Write a batch, one statement per table (closures before the new versions)."""
        conn = self.conn
        if plan.closures:
            c = plan.closures
            await conn.execute(
                CLOSE_ITEMS_SQL,
                [x.customer_id for x in c],
                [x.kind for x in c],
                [x.seq for x in c],
                [x.valid_to for x in c],
                [x.closed_by for x in c],
            )
        if plan.items:
            # COPY: the bulk of a batch (a dozen rows per registration), written by the
            # server's multi-row insert path.
            await conn.copy_records_to_table(
                ITEMS_TABLE,
                columns=ITEM_COPY_COLUMNS,
                records=[_item_record(x) for x in plan.items],
            )
        visits = [e for e in plan.entries if e.context == VISIT_CONTEXT]
        if visits:
            await conn.execute(
                INSERT_VISITS_SQL,
                [x.customer_id for x in visits],
                [x.event_id for x in visits],
                [x.body for x in visits],
                [x.source for x in visits],
                [x.data_class for x in visits],
                [x.occurred_at for x in visits],
            )
        feedback = [e for e in plan.entries if e.context == FEEDBACK_CONTEXT]
        if feedback:
            await conn.execute(
                INSERT_FEEDBACK_SQL,
                [x.customer_id for x in feedback],
                [x.event_id for x in feedback],
                [x.kind for x in feedback],
                [x.channel for x in feedback],
                [x.body for x in feedback],
                [x.source for x in feedback],
                [x.data_class for x in feedback],
                [x.occurred_at for x in feedback],
            )
        if plan.customers:
            u = plan.customers
            await conn.execute(
                UPDATE_CUSTOMERS_SQL,
                [x.customer_id for x in u],
                [x.version for x in u],
                [x.registered_at for x in u],
                [_array_literal(x.data_classes) for x in u],
            )

    async def publish(self, events: Sequence[tuple[str, Event]]) -> None:
        """Enqueue events to the outbox in one pipelined round trip (`outbox.ENQUEUE_SQL`)."""
        if not events:
            return
        if not self.conn.is_in_transaction():
            raise outbox.OutboxError("publish() must run inside the transaction of the change")
        await self.conn.executemany(
            outbox.ENQUEUE_SQL, [outbox_row(topic, event) for topic, event in events]
        )

    async def customer(self, customer_id: str) -> CustomerRow | None:
        """A customer's row, or None when the register has nothing on them."""
        row = await self.conn.fetchrow(CUSTOMER_SQL, customer_id)
        return _customer(row) if row is not None else None

    async def items(self, customer_id: str, kind: str | None = None) -> list[StoredItem]:
        """Every version of a customer's items (of one kind), by kind then `seq`."""
        if kind is None:
            rows = await self.conn.fetch(ITEMS_SQL, customer_id)
        else:
            rows = await self.conn.fetch(ITEM_HISTORY_SQL, customer_id, kind)
        return [_item(row) for row in rows]

    async def entries(self, customer_id: str) -> list[StoredEntry]:
        """A customer's visits and feedback."""
        visits = await self.conn.fetch(VISITS_SQL, customer_id)
        feedback = await self.conn.fetch(FEEDBACK_SQL, customer_id)
        return [
            StoredEntry(
                customer_id=r["customer_id"],
                event_id=r["event_id"],
                context=VISIT_CONTEXT,
                body=r["entry"],
                source=r["source"],
                data_class=r["data_class"],
                occurred_at=r["occurred_at"],
                recorded_at=r["recorded_at"],
            )
            for r in visits
        ] + [
            StoredEntry(
                customer_id=r["customer_id"],
                event_id=r["event_id"],
                context=FEEDBACK_CONTEXT,
                body=r["body"],
                source=r["source"],
                data_class=r["data_class"],
                occurred_at=r["occurred_at"],
                kind=r["kind"],
                channel=r["channel"],
                recorded_at=r["recorded_at"],
            )
            for r in feedback
        ]


class FakeRegister:
    """The register in memory, for tests: same behaviour, no transactions.

    Attributes:
        published: Every `(topic, event)` enqueued, in order.
        shredded: Customers whose key has been destroyed.
    """

    def __init__(self) -> None:
        self._claimed: set[UUID] = set()
        self._customers: dict[str, CustomerRow] = {}
        self._items: dict[tuple[str, str, int], StoredItem] = {}
        self._entries: list[StoredEntry] = []
        self._keys: dict[str, crypto.DataKey] = {}
        self.published: list[tuple[str, Event]] = []
        self.shredded: set[str] = set()

    async def claim(self, event_ids: Sequence[UUID]) -> set[UUID]:
        """Claim event ids; the ones never claimed before."""
        fresh = set(event_ids) - self._claimed
        self._claimed |= fresh
        return fresh

    async def lock_customers(self, customer_ids: Sequence[str]) -> dict[str, CustomerRow]:
        """Create the missing customers (version 0) and return every row."""
        for cid in customer_ids:
            self._customers.setdefault(cid, CustomerRow(cid))
        return {cid: self._customers[cid] for cid in sorted(set(customer_ids))}

    async def current_items(self, customer_ids: Sequence[str]) -> list[StoredItem]:
        """The current item versions of the customers."""
        wanted = set(customer_ids)
        return [i for i in self._items.values() if i.customer_id in wanted and i.current]

    async def visits(self, customer_ids: Sequence[str]) -> list[StoredEntry]:
        """The stored visits of the customers."""
        wanted = set(customer_ids)
        return [e for e in self._entries if e.customer_id in wanted and e.context == VISIT_CONTEXT]

    async def data_keys(self, customer_ids: Sequence[str]) -> dict[str, crypto.DataKey]:
        """The customers' keys, created on first use; refused once one is shredded."""
        if self.shredded.intersection(customer_ids):
            raise crypto.KeyShreddedError("the customer's key has been shredded")
        for customer_id in customer_ids:
            if customer_id not in self._keys:
                key = crypto.DataKey(customer_id, secrets.token_bytes(crypto.KEY_BYTES))
                self._keys[customer_id] = key
        return {cid: self._keys[cid] for cid in customer_ids}

    async def read_key(self, customer_id: str) -> crypto.DataKey | None:
        """The customer's key, or None."""
        if customer_id in self.shredded:
            return None
        return self._keys.get(customer_id)

    def shred(self, customer_id: str) -> None:
        """Destroy a customer's key (as `KeyStore.shred`)."""
        self._keys.pop(customer_id, None)
        self.shredded.add(customer_id)

    async def save(self, plan: BatchPlan) -> None:
        """Write a batch."""
        for c in plan.closures:
            key = (c.customer_id, c.kind, c.seq)
            item = self._items[key]
            if item.valid_to is None:
                self._items[key] = replace(item, valid_to=c.valid_to, closed_by=c.closed_by)
        for item in plan.items:
            self._items[item.customer_id, item.kind, item.seq] = item
        self._entries.extend(plan.entries)
        for u in plan.customers:
            row = self._customers[u.customer_id]
            self._customers[u.customer_id] = CustomerRow(
                customer_id=u.customer_id,
                version=u.version,
                registered_at=row.registered_at or u.registered_at,
                data_classes=u.data_classes,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )

    async def publish(self, events: Sequence[tuple[str, Event]]) -> None:
        """Record the events."""
        self.published.extend(events)

    async def customer(self, customer_id: str) -> CustomerRow | None:
        """A customer's row, or None."""
        row = self._customers.get(customer_id)
        return row if row is not None and row.version > 0 else None

    async def items(self, customer_id: str, kind: str | None = None) -> list[StoredItem]:
        """Every version of a customer's items (of one kind)."""
        return [
            item
            for (cid, k, _), item in sorted(self._items.items())
            if cid == customer_id and (kind is None or k == kind)
        ]

    async def entries(self, customer_id: str) -> list[StoredEntry]:
        """A customer's visits and feedback."""
        return [e for e in self._entries if e.customer_id == customer_id]


async def read_customer(repo: RegisterRepository, customer_id: str) -> CustomerView | None:
    """A customer's decrypted current entry with history counts, or None when not held.

    Values of a customer whose key was shredded read `crypto.SHREDDED`.
    """
    row = await repo.customer(customer_id)
    if row is None:
        return None
    cipher = CustomerCipher(await repo.read_key(customer_id), customer_id)
    items = await repo.items(customer_id)
    entries = await repo.entries(customer_id)
    return build_view(row, items, entries, cipher)


async def read_history(repo: RegisterRepository, customer_id: str, kind: str) -> list[ItemVersion]:
    """Every version of one item of a customer, oldest first, decrypted (or masked)."""
    rows = await repo.items(customer_id, kind)
    if not rows:
        return []
    cipher = CustomerCipher(await repo.read_key(customer_id), customer_id)
    return open_versions(cipher, rows)


async def load_customer(
    conn: Connection, keys: crypto.KeyStore, customer_id: str
) -> CustomerView | None:
    """The staff read API: a customer's decrypted current entry, or None when not held.

    Args:
        conn: A connection in the records schema (the service role's pool).
        keys: The records key store (`crypto.KeyStore(pool, settings.kek_bytes())`).
        customer_id: The customer number.

    Returns:
        The current items with their sources, data classes and version counts, visits and
        feedback; `None` when the register has nothing on the customer. The identity code is
        returned in full: masking it is the caller's job.
    """
    return await read_customer(PostgresRegister(conn, keys), customer_id)


async def load_history(
    conn: Connection, keys: crypto.KeyStore, customer_id: str, kind: str
) -> list[ItemVersion]:
    """Every version of one item (an `ItemKind` value), oldest first, for rectification."""
    return await read_history(PostgresRegister(conn, keys), customer_id, kind)
