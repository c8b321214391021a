"""Where a processor keeps its consent view: PostgreSQL (`SqlViewStore`) and memory (tests).

Shared by marketing, analytics and photos (see `view` for the rules, `feed` for
the consumer). Each service names its own tables in a `ViewSql` (the view, the stops, the key
column) and adds its stop effects by overriding `SqlViewStore.stop`; analytics also maps the
customer number to its pseudonym (`key`) and stores states without the number.

Every call runs on the caller's connection, inside the caller's transaction: `lock` first
inserts a placeholder row for an unknown customer (version 0, no state, nothing allowed) and
then locks the row `FOR UPDATE`, so the state, directive and fail-closed handlers of one
customer are serialised, and a reader that locks the row `FOR SHARE` sees either the view
before a stop or after it, never in between.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Final

from contracts.consent import ConsentState, Purpose
from services.common import inbox, outbox
from services.consentview.view import UNKNOWN, ViewRow, sorted_purposes

if TYPE_CHECKING:
    from uuid import UUID

    from contracts.envelope import Event
    from services.common.db import Connection

PLACEHOLDER_SQL: Final = """
INSERT INTO {view} ({key}) VALUES ($1) ON CONFLICT ({key}) DO NOTHING
"""
LOCK_SQL: Final = """
SELECT version, state, allowed FROM {view} WHERE {key} = $1 FOR UPDATE
"""
STOPS_SQL: Final = """
SELECT purpose, consent_version FROM {stops} WHERE {key} = $1
"""
SAVE_SQL: Final = """
UPDATE {view} SET version = $2, state = $3, allowed = $4::text[], updated_at = now()
WHERE {key} = $1
"""
# A stop keeps the highest version that fenced it, and the reason given at that version first.
ADD_STOPS_SQL: Final = """
INSERT INTO {stops} ({key}, purpose, consent_version, reason, directive_id)
SELECT $1, p, $3, $4, $5 FROM unnest($2::text[]) AS t(p)
ON CONFLICT ({key}, purpose) DO UPDATE
SET consent_version = EXCLUDED.consent_version,
    reason = EXCLUDED.reason,
    directive_id = EXCLUDED.directive_id,
    updated_at = now()
WHERE {stops}.consent_version < EXCLUDED.consent_version
"""
LIFT_STOPS_SQL: Final = """
DELETE FROM {stops} WHERE {key} = $1 AND purpose = ANY($2::text[]) AND consent_version < $3
"""


@dataclass(frozen=True, slots=True)
class ViewSql:
    """The statements of one service's view, formatted with its table and column names.

    Names are trusted identifiers from the service's code, never data.
    """

    placeholder: str
    lock: str
    stops: str
    save: str
    add_stops: str
    lift_stops: str

    @classmethod
    def of(cls, *, view: str, stops: str, key: str) -> ViewSql:
        """The statements for the view table `view`, stop table `stops`, key column `key`."""
        names = {"view": view, "stops": stops, "key": key}
        return cls(
            placeholder=PLACEHOLDER_SQL.format(**names),
            lock=LOCK_SQL.format(**names),
            stops=STOPS_SQL.format(**names),
            save=SAVE_SQL.format(**names),
            add_stops=ADD_STOPS_SQL.format(**names),
            lift_stops=LIFT_STOPS_SQL.format(**names),
        )


def parse_purposes(values: Any) -> frozenset[Purpose]:  # noqa: ANN401 - a text[] column
    """The known purposes of a stored `text[]` (an unknown value is ignored: not allowed)."""
    known = {str(p) for p in Purpose}
    return frozenset(Purpose(v) for v in values or () if v in known)


class SqlViewStore:
    """A service's consent view in its schema, on one connection (see the module docstring).

    Subclasses set `SQL` and `INBOX_CONSUMER`, and override `stop` with their effects.
    """

    SQL: ClassVar[ViewSql]
    INBOX_CONSUMER: ClassVar[str]

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def key(self, customer_id: str) -> object:
        """The value of the key column for a customer (the number itself by default)."""
        return customer_id

    def state_document(self, state: ConsentState) -> dict[str, Any]:
        """The JSON document stored for a state."""
        return state.model_dump(mode="json")

    def load_state(self, customer_id: str, document: dict[str, Any]) -> ConsentState:
        """The state a stored document holds."""
        return ConsentState.model_validate(document | {"customer_id": customer_id})

    async def claim(self, event_id: UUID) -> bool:
        """Claim a directive's event id in the service's inbox."""
        return await inbox.claim(self.conn, self.INBOX_CONSUMER, event_id)

    async def lock(self, customer_id: str) -> ViewRow:
        """The customer's view, locked `FOR UPDATE` (a placeholder row when unknown)."""
        key = self.key(customer_id)
        await self.conn.execute(self.SQL.placeholder, key)
        row = await self.conn.fetchrow(self.SQL.lock, key)
        if row is None:  # pragma: no cover - the placeholder was just inserted
            return UNKNOWN
        document = row["state"]
        state = self.load_state(customer_id, document) if document is not None else None
        return ViewRow(version=row["version"], state=state, allowed=parse_purposes(row["allowed"]))

    async def stops(self, customer_id: str) -> dict[Purpose, int]:
        """The customer's active stops."""
        rows = await self.conn.fetch(self.SQL.stops, self.key(customer_id))
        known = {str(p) for p in Purpose}
        return {Purpose(r["purpose"]): r["consent_version"] for r in rows if r["purpose"] in known}

    async def save(
        self,
        customer_id: str,
        version: int,
        state: ConsentState | None,
        allowed: frozenset[Purpose],
    ) -> None:
        """Store the customer's view."""
        document = self.state_document(state) if state is not None else None
        await self.conn.execute(
            self.SQL.save,
            self.key(customer_id),
            version,
            document,
            [str(p) for p in sorted_purposes(allowed)],
        )

    async def add_stops(
        self,
        customer_id: str,
        purposes: frozenset[Purpose],
        *,
        version: int,
        reason: str,
        directive_id: UUID | None,
    ) -> None:
        """Fence purposes at `version`."""
        if not purposes:
            return
        await self.conn.execute(
            self.SQL.add_stops,
            self.key(customer_id),
            [str(p) for p in sorted_purposes(purposes)],
            version,
            reason,
            directive_id,
        )

    async def lift_stops(
        self, customer_id: str, purposes: frozenset[Purpose], *, below: int
    ) -> None:
        """Delete the stops of `purposes` fenced below `below`."""
        await self.conn.execute(
            self.SQL.lift_stops,
            self.key(customer_id),
            [str(p) for p in sorted_purposes(purposes)],
            below,
        )

    async def stop(
        self,
        customer_id: str,
        purposes: frozenset[Purpose],
        *,
        state: ConsentState | None,
        photo_ids: tuple[str, ...],
    ) -> None:
        """The service's stop effects; none by default (the view alone stops it)."""

    async def publish(self, topic: str, event: Event) -> None:
        """Enqueue an event to the service's outbox, in this transaction."""
        await outbox.enqueue_event(self.conn, topic=topic, event=event)


@dataclass(frozen=True, slots=True)
class StopRow:
    """A stop as the memory store keeps it."""

    consent_version: int
    reason: str
    directive_id: UUID | None


Effect = tuple[str, frozenset[Purpose], ConsentState | None, tuple[str, ...]]
"""A recorded `stop` call: customer, purposes, the state given, photo ids."""


class MemoryViewStore:
    """The consent view in memory, for tests: same behaviour, no transactions.

    Attributes:
        views: The view per customer.
        stop_rows: The stops per (customer, purpose).
        effects: Every `stop` call: (customer, purposes, state given, photo_ids).
        published: Every `(topic, event)` enqueued, in order.
    """

    def __init__(self) -> None:
        self.claimed: set[UUID] = set()
        self.views: dict[str, ViewRow] = {}
        self.stop_rows: dict[tuple[str, Purpose], StopRow] = {}
        self.effects: list[Effect] = []
        self.published: list[tuple[str, Event]] = []

    async def claim(self, event_id: UUID) -> bool:
        """Claim an event id; False when claimed before."""
        if event_id in self.claimed:
            return False
        self.claimed.add(event_id)
        return True

    async def lock(self, customer_id: str) -> ViewRow:
        """The customer's view (a placeholder when unknown)."""
        return self.views.setdefault(customer_id, UNKNOWN)

    async def stops(self, customer_id: str) -> dict[Purpose, int]:
        """The customer's active stops."""
        return {p: s.consent_version for (c, p), s in self.stop_rows.items() if c == customer_id}

    async def save(
        self,
        customer_id: str,
        version: int,
        state: ConsentState | None,
        allowed: frozenset[Purpose],
    ) -> None:
        """Store the customer's view."""
        row = self.views.get(customer_id, UNKNOWN)
        self.views[customer_id] = replace(row, version=version, state=state, allowed=allowed)

    async def add_stops(
        self,
        customer_id: str,
        purposes: frozenset[Purpose],
        *,
        version: int,
        reason: str,
        directive_id: UUID | None,
    ) -> None:
        """Fence purposes at `version` (keeping a higher existing version)."""
        for purpose in purposes:
            current = self.stop_rows.get((customer_id, purpose))
            if current is None or current.consent_version < version:
                self.stop_rows[customer_id, purpose] = StopRow(version, reason, directive_id)

    async def lift_stops(
        self, customer_id: str, purposes: frozenset[Purpose], *, below: int
    ) -> None:
        """Delete the stops of `purposes` fenced below `below`."""
        for purpose in purposes:
            current = self.stop_rows.get((customer_id, purpose))
            if current is not None and current.consent_version < below:
                del self.stop_rows[customer_id, purpose]

    async def stop(
        self,
        customer_id: str,
        purposes: frozenset[Purpose],
        *,
        state: ConsentState | None,
        photo_ids: tuple[str, ...],
    ) -> None:
        """Record the effects asked for."""
        self.effects.append((customer_id, purposes, state, photo_ids))

    async def publish(self, topic: str, event: Event) -> None:
        """Record the event."""
        self.published.append((topic, event))
