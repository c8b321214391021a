"""Where consent is kept: the `ConsentRepository` protocol, PostgreSQL, and an in-memory fake.

The PostgreSQL implementation works on one connection inside the caller's transaction, so an
inbox claim, the history rows, the current state, a directive and the outbox events of one
command commit together. A customer's changes are serialised by their `consent_current` row:
`lock` creates it when missing and locks it `FOR UPDATE` before anything is read, and `save`
updates it only at the version it read (a second writer could not have moved it, but a bug
that did would fail loudly rather than fork the history). `consent_events` is append-only
(a trigger refuses updates and deletes) with a unique `(customer_id, version)`.

Acks lock their directive's row `FOR UPDATE`, so two answers to one directive are counted one
after the other and `fully_applied_at` is set exactly once.

`load_consent` and `directive_status` are the read API the staff CLI uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from contracts.audit import AUDIT_TOPIC
from contracts.consent import (
    DIRECTIVES_TOPIC,
    EVENTS_TOPIC,
    HISTORY_TYPES,
    STATE_TOPIC,
    ConsentState,
    ProcessingStopped,
)
from contracts.envelope import EVENT_TYPES
from services.common import inbox, outbox
from services.consent.domain import CustomerConsent, from_documents, snapshot, to_documents

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

    import asyncpg

    from contracts.envelope import Event
    from services.common.db import Connection
    from services.consent.domain import Decision

COMMANDS_CONSUMER: Final = "consent.commands"
"""The inbox consumer name of the command handler."""
ACKS_CONSUMER: Final = "consent.acks"
"""The inbox consumer name of the ack handler."""

CREATE_CURRENT_SQL: Final = """
INSERT INTO consent_current (customer_id) VALUES ($1) ON CONFLICT (customer_id) DO NOTHING
"""
"""Create the row of a customer seen for the first time (version 0)."""

LOCK_CURRENT_SQL: Final = """
SELECT customer_id, version, purposes, objections, holds
FROM consent_current
WHERE customer_id = $1
FOR UPDATE
"""
"""Lock a customer's row and read their current state."""

CURRENT_SQL: Final = """
SELECT customer_id, version, purposes, objections, holds, updated_at
FROM consent_current
WHERE customer_id = $1 AND version > 0
"""

UPDATE_CURRENT_SQL: Final = """
UPDATE consent_current
SET version = $2, purposes = $3, objections = $4, holds = $5, updated_at = now()
WHERE customer_id = $1 AND version = $6
"""
"""Store a customer's new state, only at the version it was read at."""

INSERT_HISTORY_SQL: Final = """
INSERT INTO consent_events
    (customer_id, version, event_id, command_id, kind, purpose, objection, status, record,
     occurred_at, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""

HISTORY_SQL: Final = """
SELECT record FROM consent_events WHERE customer_id = $1 ORDER BY version
"""

NOTICE_SQL: Final = """
SELECT sha256 FROM notices WHERE notice_id = $1 AND version = $2 AND language = $3
"""

INSERT_NOTICE_SQL: Final = """
INSERT INTO notices (notice_id, version, language, sha256) VALUES ($1, $2, $3, $4)
ON CONFLICT (notice_id, version, language) DO NOTHING
"""

INSERT_DIRECTIVE_SQL: Final = """
INSERT INTO directives
    (directive_id, customer_id, consent_version, reason, purposes, expected_services)
VALUES ($1, $2, $3, $4, $5::text[], $6::text[])
"""

DIRECTIVE_COLUMNS: Final = """
directive_id, customer_id, consent_version, reason, purposes, expected_services, committed_at,
fully_applied_at, latency_ms
"""

LOCK_DIRECTIVE_SQL: Final = f"""
SELECT {DIRECTIVE_COLUMNS} FROM directives WHERE directive_id = $1 FOR UPDATE
"""

DIRECTIVE_SQL: Final = f"SELECT {DIRECTIVE_COLUMNS} FROM directives WHERE directive_id = $1"

CUSTOMER_DIRECTIVES_SQL: Final = f"""
SELECT {DIRECTIVE_COLUMNS} FROM directives WHERE customer_id = $1 ORDER BY consent_version
"""

INSERT_ACK_SQL: Final = """
INSERT INTO directive_acks (directive_id, service, consent_version, ack_event_id)
VALUES ($1, $2, $3, $4)
ON CONFLICT (directive_id, service) DO NOTHING
RETURNING true
"""

ACKS_SQL: Final = """
SELECT service, acked_at FROM directive_acks WHERE directive_id = $1 ORDER BY acked_at, service
"""

MARK_APPLIED_SQL: Final = """
WITH t AS (SELECT clock_timestamp() AS at)
UPDATE directives AS d
SET fully_applied_at = t.at,
    latency_ms = GREATEST(0, round(EXTRACT(EPOCH FROM (t.at - d.committed_at)) * 1000))::bigint
FROM t
WHERE d.directive_id = $1 AND d.fully_applied_at IS NULL
RETURNING d.latency_ms
"""
"""Mark a directive fully applied now; its latency is measured from its commit, in ms."""


class ConcurrentChangeError(RuntimeError):
    """A customer's row moved under a writer that held its lock (a bug, never expected)."""


@dataclass(frozen=True, slots=True)
class DirectiveStatus:
    """A stop directive and who has answered it.

    Attributes:
        directive_id: The directive's id.
        customer_id: The customer.
        consent_version: The consent version that made the stop.
        reason: withdrawal, objection or hold.
        purposes: The purposes stopped.
        expected_services: The services that must answer.
        acks: The services that answered, and when.
        committed_at: When the directive was written (its transaction's commit, to the ms).
        fully_applied_at: When the last expected service answered (None: still pending).
        latency_ms: `fully_applied_at - committed_at` in milliseconds (None: still pending).
    """

    directive_id: UUID
    customer_id: str
    consent_version: int
    reason: str
    purposes: tuple[str, ...]
    expected_services: tuple[str, ...]
    acks: dict[str, datetime] = field(default_factory=dict)
    committed_at: datetime | None = None
    fully_applied_at: datetime | None = None
    latency_ms: int | None = None

    @property
    def pending(self) -> tuple[str, ...]:
        """The expected services that have not answered yet."""
        return tuple(s for s in self.expected_services if s not in self.acks)


@dataclass(frozen=True, slots=True)
class ConsentView:
    """Everything consent holds on one customer, for the CLI.

    Attributes:
        state: The current state, as `consent.state.v1` carries it.
        history: Every history event, in version order.
        directives: Every directive, in version order, with its answers.
    """

    state: ConsentState
    history: tuple[Event, ...]
    directives: tuple[DirectiveStatus, ...]


class ConsentRepository(Protocol):
    """What consent's use cases need of storage; writes join the caller's transaction."""

    async def claim(self, consumer: str, event_id: UUID) -> bool:
        """Claim an event id in the inbox; True when it was never claimed (apply it)."""

    async def lock(self, customer_id: str) -> CustomerConsent:
        """Create the customer's row if missing (version 0), lock it, and return the state."""

    async def notice_sha256(self, notice_id: str, version: str, language: str) -> str | None:
        """The registered hash of a notice's exact text, if the notice is known."""

    async def save(self, previous_version: int, decision: Decision) -> None:
        """Write a decision: history, current state, notice, directive, and outbox events."""

    async def lock_directive(self, directive_id: UUID) -> DirectiveStatus | None:
        """Lock a directive and return it with its answers (None: not consent's directive)."""

    async def add_ack(self, ack: ProcessingStopped) -> bool:
        """Record an answer; False when that service had answered the directive already."""

    async def mark_fully_applied(self, directive_id: UUID) -> int | None:
        """Set `fully_applied_at` now; the latency in ms (None: it was set already)."""


def _directive(row: asyncpg.Record, acks: Sequence[asyncpg.Record]) -> DirectiveStatus:
    return DirectiveStatus(
        directive_id=row["directive_id"],
        customer_id=row["customer_id"],
        consent_version=row["consent_version"],
        reason=row["reason"],
        purposes=tuple(row["purposes"]),
        expected_services=tuple(row["expected_services"]),
        acks={a["service"]: a["acked_at"] for a in acks},
        committed_at=row["committed_at"],
        fully_applied_at=row["fully_applied_at"],
        latency_ms=row["latency_ms"],
    )


def _history_row(event: Event) -> tuple[Any, ...]:
    doc = event.model_dump(mode="json")
    recorded_at = getattr(event, "recorded_at", None) or datetime.now(UTC)
    return (
        event.customer_id,
        doc["version"],
        event.event_id,
        doc["command_id"],
        event.type,
        doc.get("purpose"),
        doc.get("objection"),
        doc.get("status"),
        doc,
        event.occurred_at,
        recorded_at,
    )


def _outbox_events(decision: Decision) -> list[tuple[str, Event]]:
    events: list[tuple[str, Event]] = [(EVENTS_TOPIC, e) for e in decision.history]
    events.append((STATE_TOPIC, decision.snapshot))
    if decision.directive is not None:
        events.append((DIRECTIVES_TOPIC, decision.directive))
    events.append((AUDIT_TOPIC, decision.audit))
    return events


class PostgresConsent:
    """Consent in the service's schema, on one connection (inside a transaction to write).

    Args:
        conn: A connection of the service's pool.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def claim(self, consumer: str, event_id: UUID) -> bool:
        """Claim an event id in the inbox; True when it was never claimed (apply it)."""
        return await inbox.claim(self.conn, consumer, event_id)

    async def lock(self, customer_id: str) -> CustomerConsent:
        """Create the customer's row if missing (version 0), lock it, and return the state."""
        await self.conn.execute(CREATE_CURRENT_SQL, customer_id)
        row = await self.conn.fetchrow(LOCK_CURRENT_SQL, customer_id)
        if row is None:  # pragma: no cover - the row was just created in this transaction
            raise ConcurrentChangeError("consent_current row vanished")
        return from_documents(
            row["customer_id"], row["version"], row["purposes"], row["objections"], row["holds"]
        )

    async def notice_sha256(self, notice_id: str, version: str, language: str) -> str | None:
        """The registered hash of a notice's exact text, if the notice is known."""
        value = await self.conn.fetchval(NOTICE_SQL, notice_id, version, language)
        return str(value) if value is not None else None

    async def save(self, previous_version: int, decision: Decision) -> None:
        """Write a decision, in the caller's transaction.

        Raises:
            ConcurrentChangeError: The customer's row is no longer at `previous_version`.
            outbox.OutboxError: Called outside a transaction.
        """
        conn = self.conn
        if not conn.is_in_transaction():
            raise outbox.OutboxError("save() must run inside the transaction of the change")
        state = decision.state
        purposes, objections, holds = to_documents(state)
        status = await conn.execute(
            UPDATE_CURRENT_SQL,
            state.customer_id,
            state.version,
            purposes,
            objections,
            holds,
            previous_version,
        )
        if status != "UPDATE 1":
            raise ConcurrentChangeError("consent_current moved under its lock")
        await conn.executemany(INSERT_HISTORY_SQL, [_history_row(e) for e in decision.history])
        if decision.notice is not None:
            await conn.execute(INSERT_NOTICE_SQL, *decision.notice)
        directive = decision.directive
        if directive is not None:
            await conn.execute(
                INSERT_DIRECTIVE_SQL,
                directive.directive_id,
                directive.customer_id,
                directive.consent_version,
                directive.reason,
                [str(p) for p in directive.purposes],
                list(directive.services),
            )
        for topic, event in _outbox_events(decision):
            await outbox.enqueue_event(conn, topic=topic, event=event)

    async def lock_directive(self, directive_id: UUID) -> DirectiveStatus | None:
        """Lock a directive and return it with its answers (None: not consent's directive)."""
        row = await self.conn.fetchrow(LOCK_DIRECTIVE_SQL, directive_id)
        if row is None:
            return None
        return _directive(row, await self.conn.fetch(ACKS_SQL, directive_id))

    async def add_ack(self, ack: ProcessingStopped) -> bool:
        """Record an answer; False when that service had answered the directive already."""
        added = await self.conn.fetchval(
            INSERT_ACK_SQL, ack.directive_id, ack.service, ack.consent_version, ack.event_id
        )
        return bool(added)

    async def mark_fully_applied(self, directive_id: UUID) -> int | None:
        """Set `fully_applied_at` now; the latency in ms (None: it was set already)."""
        latency = await self.conn.fetchval(MARK_APPLIED_SQL, directive_id)
        return int(latency) if latency is not None else None


class InMemoryConsent:
    """The same storage in dictionaries (no transactions): for unit tests and tools.

    Attributes:
        outbox: Every event written, as `(topic, event)`, in order.
    """

    def __init__(self) -> None:
        self.claims: set[tuple[str, UUID]] = set()
        self.current: dict[str, CustomerConsent] = {}
        self.history: dict[str, list[Event]] = {}
        self.notices: dict[tuple[str, str, str], str] = {}
        self.directives: dict[UUID, DirectiveStatus] = {}
        self.outbox: list[tuple[str, Event]] = []

    async def claim(self, consumer: str, event_id: UUID) -> bool:
        """Claim an event id in the inbox; True when it was never claimed (apply it)."""
        if (consumer, event_id) in self.claims:
            return False
        self.claims.add((consumer, event_id))
        return True

    async def lock(self, customer_id: str) -> CustomerConsent:
        """The customer's state (version 0 when never seen)."""
        return self.current.setdefault(customer_id, CustomerConsent(customer_id))

    async def notice_sha256(self, notice_id: str, version: str, language: str) -> str | None:
        """The registered hash of a notice's exact text, if the notice is known."""
        return self.notices.get((notice_id, version, language))

    async def save(self, previous_version: int, decision: Decision) -> None:
        """Write a decision (as the Postgres implementation does, with the same checks)."""
        state = decision.state
        if self.current[state.customer_id].version != previous_version:
            raise ConcurrentChangeError("consent_current moved under its lock")
        history = self.history.setdefault(state.customer_id, [])
        versions = {getattr(e, "version", None) for e in history}
        for event in decision.history:
            if getattr(event, "version", None) in versions:
                raise ConcurrentChangeError("duplicate (customer_id, version)")
            history.append(event)
        self.current[state.customer_id] = state
        if decision.notice is not None:
            notice_id, version, language, sha256 = decision.notice
            self.notices.setdefault((notice_id, version, language), sha256)
        directive = decision.directive
        if directive is not None:
            self.directives[directive.directive_id] = DirectiveStatus(
                directive_id=directive.directive_id,
                customer_id=directive.customer_id,
                consent_version=directive.consent_version,
                reason=directive.reason,
                purposes=tuple(str(p) for p in directive.purposes),
                expected_services=directive.services,
                committed_at=datetime.now(UTC),
            )
        self.outbox.extend(_outbox_events(decision))

    async def lock_directive(self, directive_id: UUID) -> DirectiveStatus | None:
        """A directive with its answers (None: not consent's directive)."""
        return self.directives.get(directive_id)

    async def add_ack(self, ack: ProcessingStopped) -> bool:
        """Record an answer; False when that service had answered the directive already."""
        directive = self.directives[ack.directive_id]
        if ack.service in directive.acks:
            return False
        acks = {**directive.acks, ack.service: datetime.now(UTC)}
        self.directives[ack.directive_id] = replace(directive, acks=acks)
        return True

    async def mark_fully_applied(self, directive_id: UUID) -> int | None:
        """Set `fully_applied_at` now; the latency in ms (None: it was set already)."""
        directive = self.directives[directive_id]
        if directive.fully_applied_at is not None:
            return None
        at = datetime.now(UTC)
        started = directive.committed_at or at
        latency = max(0, round((at - started).total_seconds() * 1000))
        self.directives[directive_id] = replace(directive, fully_applied_at=at, latency_ms=latency)
        return latency


# --- The read API --------------------------------------------------------------------------


def _history_event(record: dict[str, Any]) -> Event:
    model = EVENT_TYPES.get(str(record.get("type")))
    if model is None or model not in HISTORY_TYPES:
        raise ValueError("consent_events holds an unknown record type")
    return model.model_validate(record)


async def load_consent(conn: Connection, customer_id: str) -> ConsentView | None:
    """Everything consent holds on one customer, or None when it has nothing.

    Args:
        conn: A connection of the consent service's pool (search_path = consent).
        customer_id: The customer number.
    """
    row = await conn.fetchrow(CURRENT_SQL, customer_id)
    if row is None:
        return None
    state = from_documents(
        row["customer_id"], row["version"], row["purposes"], row["objections"], row["holds"]
    )
    history = tuple(_history_event(r["record"]) for r in await conn.fetch(HISTORY_SQL, customer_id))
    directives = [
        _directive(d, await conn.fetch(ACKS_SQL, d["directive_id"]))
        for d in await conn.fetch(CUSTOMER_DIRECTIVES_SQL, customer_id)
    ]
    correlation = history[-1].correlation_id if history else None
    return ConsentView(
        state=snapshot(state, now=row["updated_at"], correlation_id=correlation),
        history=history,
        directives=tuple(directives),
    )


async def directive_status(conn: Connection, directive_id: UUID) -> DirectiveStatus | None:
    """A directive and its answers, or None when consent never issued it.

    Args:
        conn: A connection of the consent service's pool (search_path = consent).
        directive_id: The directive's id.
    """
    row = await conn.fetchrow(DIRECTIVE_SQL, directive_id)
    if row is None:
        return None
    return _directive(row, await conn.fetch(ACKS_SQL, directive_id))
