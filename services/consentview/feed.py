"""How a consent-driven processor consumes consent: states, stop directives, acks, fail closed.

Shared by marketing, analytics and photos (see `view` for the rules). Each service
supplies a `ViewStore` (its own tables, and the stop effects that are its business: nothing
more for marketing, deleting contributions for analytics, restricting or deleting photos for
photos) and registers the two subscribers with `register_feed`:

- `consent.state.v1` (compacted): each record is a customer's whole `ConsentState`; a tombstone
  (a null value) forgets the customer. Applied under the view's row lock, only when newer.
- `privacy.directives.v1`: a `ProcessingStopRequested` is applied once (inbox on its event id)
  and, when the service is named, answered with `ProcessingStopped` on `privacy.acks.v1`
  through the outbox in the same transaction as the stop: the answer exists exactly when the
  stop is durable. Other directive types (erasure orders) are not this feed's business.

Fail closed (PATTERNS.md §1.5): a record that still fails after the bounded retries (or at once,
when it is malformed) suppresses its customer for every purpose of the service, goes to its
`<topic>.dlq`, and is logged as an alert (`consent_view.ALERT`); only then is its offset
committed. An outage (Postgres or Kafka unreachable) is never dead-lettered: the record stays
uncommitted and is redelivered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Protocol

from faststream.kafka.annotations import KafkaMessage  # noqa: TC002 - FastStream reads it
from pydantic import ValidationError

from contracts.audit import AUDIT_TOPIC, AuditAction, AuditEvent, AuditOutcome
from contracts.consent import (
    DIRECTIVES_TOPIC,
    LEGAL_BASIS,
    STATE_TOPIC,
    ConsentState,
    ProcessingStopped,
    ProcessingStopRequested,
    Purpose,
)
from services.common.audit import SERVICE_ROLE
from services.common.kafka import (
    PermanentError,
    RetryPolicy,
    dead_letter,
    error_reason,
    is_outage,
    is_permanent,
    subscriber_kwargs,
)
from services.consentview.view import (
    ACK_TOPIC,
    ALERT,
    FAIL_CLOSED,
    REASON_CODES,
    ViewRow,
    ack_for,
    plan_directive,
    plan_state,
    purposes_of,
    sorted_purposes,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from contextlib import AbstractAsyncContextManager
    from uuid import UUID

    from aiokafka import ConsumerRecord
    from faststream.kafka import KafkaBroker
    from faststream.message import StreamMessage

    from contracts.envelope import Event
    from services.common.db import Connection
    from services.common.runtime import ServiceContext

log = logging.getLogger(__name__)

_CUSTOMER_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class ViewStore(Protocol):
    """A service's consent view, on one transaction (the Postgres store, or a fake)."""

    async def claim(self, event_id: UUID) -> bool:
        """Claim a directive's event id in the inbox; False when it was applied before."""

    async def lock(self, customer_id: str) -> ViewRow:
        """The customer's view, locked until the transaction ends (a placeholder if unknown)."""

    async def stops(self, customer_id: str) -> dict[Purpose, int]:
        """The customer's active stops: purpose -> the consent version it fences."""

    async def save(
        self,
        customer_id: str,
        version: int,
        state: ConsentState | None,
        allowed: frozenset[Purpose],
    ) -> None:
        """Store the customer's view (after `lock`)."""

    async def add_stops(
        self,
        customer_id: str,
        purposes: frozenset[Purpose],
        *,
        version: int,
        reason: str,
        directive_id: UUID | None,
    ) -> None:
        """Fence purposes at `version` (an existing stop keeps the higher version)."""

    async def lift_stops(
        self, customer_id: str, purposes: frozenset[Purpose], *, below: int
    ) -> None:
        """Delete the stops of `purposes` fenced at a version lower than `below`."""

    async def stop(
        self,
        customer_id: str,
        purposes: frozenset[Purpose],
        *,
        state: ConsentState | None,
        photo_ids: tuple[str, ...],
    ) -> None:
        """Apply the service's own stop effects for `purposes` (idempotent).

        Args:
            customer_id: The customer.
            purposes: The purposes stopped.
            state: When given, an item (a photo) is affected only where this state does not
                allow it (`effective(state, purpose, photo_id)`); None: unconditionally.
            photo_ids: Only these photos (empty: all of the customer's).
        """

    async def publish(self, topic: str, event: Event) -> None:
        """Enqueue an event to the outbox, in this transaction."""


class Outcome(StrEnum):
    """What a consent record did."""

    APPLIED = "applied"
    STALE = "stale"
    FORGOTTEN = "forgotten"
    SUPERSEDED = "superseded"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    FAILED_CLOSED = "failed_closed"


@dataclass(frozen=True, slots=True)
class Processor:
    """Who is consuming: the service, its purposes, and the resource its stops touch.

    Attributes:
        service: The service name (schema, principal, consumer group, ack `service`).
        resource: The audited resource of its stops (`<service>.<thing>`).
        purposes: The purposes it processes (from the catalogue unless given).
    """

    service: str
    resource: str
    purposes: frozenset[Purpose] = field(default=frozenset())

    def __post_init__(self) -> None:
        if not self.purposes:
            object.__setattr__(self, "purposes", purposes_of(self.service))


# --- Use cases, on one transaction ----------------------------------------------------------


async def apply_state(
    store: ViewStore, processor: Processor, customer_id: str, state: ConsentState | None
) -> Outcome:
    """Apply a customer's state (None: a tombstone) to the view, only if it is newer."""
    row = await store.lock(customer_id)
    stops = await store.stops(customer_id)
    plan = plan_state(row, state, processor.purposes, stops)
    if plan is None:
        return Outcome.STALE
    if plan.lift:
        await store.lift_stops(customer_id, plan.lift, below=plan.version)
    await store.save(customer_id, plan.version, plan.state, plan.allowed)
    if plan.stopped:
        await store.stop(customer_id, plan.stopped, state=plan.state, photo_ids=())
    return Outcome.FORGOTTEN if state is None else Outcome.APPLIED


async def apply_directive(
    store: ViewStore, processor: Processor, directive: ProcessingStopRequested
) -> Outcome:
    """Apply a stop directive once, and answer it when the service is named."""
    relevant = frozenset(directive.purposes) & processor.purposes
    if not relevant and processor.service not in directive.services:
        return Outcome.IGNORED
    if not await store.claim(directive.event_id):
        return Outcome.DUPLICATE
    cid = directive.customer_id
    row = await store.lock(cid)
    plan = plan_directive(row, directive, processor.service, processor.purposes)
    if plan.fence:
        await store.add_stops(
            cid,
            plan.fence,
            version=directive.consent_version,
            reason=directive.reason,
            directive_id=directive.directive_id,
        )
    if plan.allowed != row.allowed:
        await store.save(cid, row.version, row.state, plan.allowed)
    if plan.stopped:
        await store.stop(cid, plan.stopped, state=plan.effects_state, photo_ids=directive.photo_ids)
    if not plan.superseded:
        for purpose in sorted_purposes(relevant):
            await store.publish(
                AUDIT_TOPIC,
                stop_audit(processor, cid, purpose, directive.reason, directive.correlation_id),
            )
    if plan.answer:
        await store.publish(ACK_TOPIC, ack_for(directive, processor.service))
    return Outcome.SUPERSEDED if plan.superseded else Outcome.APPLIED


async def suppress(store: ViewStore, processor: Processor, customer_id: str) -> None:
    """Fail closed: fence every purpose of the service at the view's version, allow none."""
    row = await store.lock(customer_id)
    await store.add_stops(
        customer_id,
        processor.purposes,
        version=row.version,
        reason=FAIL_CLOSED,
        directive_id=None,
    )
    await store.save(customer_id, row.version, row.state, frozenset())
    for purpose in sorted_purposes(processor.purposes):
        await store.publish(AUDIT_TOPIC, stop_audit(processor, customer_id, purpose, FAIL_CLOSED))


def stop_audit(
    processor: Processor,
    customer_id: str,
    purpose: Purpose,
    reason: str,
    correlation_id: UUID | None = None,
) -> AuditEvent:
    """The audit event of one purpose stopped for one customer."""
    fields: dict[str, object] = {
        "producer": processor.service,
        "actor": processor.service,
        "actor_role": SERVICE_ROLE,
        "action": AuditAction.STOP,
        "customer_id": customer_id,
        "resource": processor.resource,
        "outcome": AuditOutcome.SUCCESS,
        "purpose": str(purpose),
        "legal_basis": LEGAL_BASIS[purpose],
        "reason_code": REASON_CODES.get(reason, "directive.other"),
    }
    if correlation_id is not None:
        fields["correlation_id"] = correlation_id
    return AuditEvent.model_validate(fields)


# --- Decoding -------------------------------------------------------------------------------


def key_customer(record: ConsumerRecord[Any, Any]) -> str | None:
    """The record's key when it is a well-formed customer number, else None."""
    key = record.key
    if not isinstance(key, bytes):
        return None
    text = key.decode("utf-8", errors="replace")
    return text if _CUSTOMER_ID.fullmatch(text) else None


def _document(value: object) -> dict[str, Any]:
    if not isinstance(value, bytes) or not value:
        raise PermanentError("not_json")
    try:
        wire = json.loads(value)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PermanentError("not_json") from None
    if not isinstance(wire, dict):
        raise PermanentError("not_object")
    return wire


def decode_state(record: ConsumerRecord[Any, Any]) -> tuple[str, ConsentState | None]:
    """The customer and state of a `consent.state.v1` record (None: a tombstone).

    Raises:
        PermanentError: `key_invalid`, `not_json`, `not_object`, `unexpected_type`,
            `invalid_state` or `key_mismatch`; never quoting the content.
    """
    customer_id = key_customer(record)
    if customer_id is None:
        raise PermanentError("key_invalid")
    if record.value is None:
        return customer_id, None
    wire = _document(record.value)
    if wire.get("type") != "ConsentState":
        raise PermanentError("unexpected_type")
    try:
        state = ConsentState.model_validate(wire)
    except ValidationError:
        raise PermanentError("invalid_state") from None
    if state.customer_id != customer_id:
        raise PermanentError("key_mismatch")
    return customer_id, state


def decode_directive(record: ConsumerRecord[Any, Any]) -> ProcessingStopRequested | None:
    """The stop directive of a `privacy.directives.v1` record; None for other directive types.

    Raises:
        PermanentError: `key_invalid`, `not_json`, `not_object`, `invalid_directive` or
            `key_mismatch`.
    """
    customer_id = key_customer(record)
    if customer_id is None:
        raise PermanentError("key_invalid")
    wire = _document(record.value)
    if wire.get("type") != "ProcessingStopRequested":
        return None
    try:
        directive = ProcessingStopRequested.model_validate(wire)
    except ValidationError:
        raise PermanentError("invalid_directive") from None
    if directive.customer_id != customer_id:
        raise PermanentError("key_mismatch")
    return directive


def customers_named(record: ConsumerRecord[Any, Any]) -> list[str]:
    """Every well-formed customer number a record names (its key, its `customer_id`)."""
    out: list[str] = []
    key = key_customer(record)
    if key is not None:
        out.append(key)
    try:
        named = json.loads(record.value) if isinstance(record.value, bytes) else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        named = None
    value = named.get("customer_id") if isinstance(named, dict) else None
    if isinstance(value, str) and _CUSTOMER_ID.fullmatch(value) and value not in out:
        out.append(value)
    return out


# --- The consumer ---------------------------------------------------------------------------


class ConsentFeed:
    """Applies consent records one at a time, each in its own transaction, failing closed.

    Args:
        processor: The consuming service.
        unit: Opens a transaction and yields the service's store on it.
        dead_letter: Publishes a record to its DLQ with the error and the attempts made.
        policy: Retries before a record is given up.
        sleep: The pause between retries (tests pass a fake).
    """

    def __init__(
        self,
        processor: Processor,
        unit: Callable[[], AbstractAsyncContextManager[ViewStore]],
        dead_letter: Callable[[ConsumerRecord[Any, Any], Exception, int], Awaitable[None]],
        policy: RetryPolicy,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.processor = processor
        self._unit = unit
        self._dead_letter = dead_letter
        self._policy = policy
        self._sleep = sleep

    async def on_state(self, record: ConsumerRecord[Any, Any]) -> Outcome:
        """Apply one `consent.state.v1` record."""

        async def apply(store: ViewStore) -> Outcome:
            customer_id, state = decode_state(record)
            return await apply_state(store, self.processor, customer_id, state)

        return await self.consume(record, apply)

    async def on_directive(self, record: ConsumerRecord[Any, Any]) -> Outcome:
        """Apply one `privacy.directives.v1` record."""

        async def apply(store: ViewStore) -> Outcome:
            directive = decode_directive(record)
            if directive is None:
                return Outcome.IGNORED
            return await apply_directive(store, self.processor, directive)

        return await self.consume(record, apply)

    async def consume(
        self,
        record: ConsumerRecord[Any, Any],
        apply: Callable[[ViewStore], Awaitable[Outcome]],
    ) -> Outcome:
        """Apply a record with bounded retries; when it cannot be applied, fail closed.

        Raises:
            Exception: An outage outlasted the retries (the record is redelivered), or the
                fail-closed suppression or the dead-letter publish failed (so the offset must
                not commit).
        """
        delays = self._policy.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._unit() as store:
                    return await apply(store)
            except Exception as exc:
                if is_outage(exc) and attempt > len(delays):
                    raise
                if is_permanent(exc) or attempt > len(delays):
                    await self._fail_closed(record, exc, attempt)
                    return Outcome.FAILED_CLOSED
                log.warning(
                    "consent record failed, retrying",
                    extra=_fields(record) | {"reason": error_reason(exc), "attempt": attempt},
                )
            await self._sleep(delays[attempt - 1])

    async def _fail_closed(
        self, record: ConsumerRecord[Any, Any], exc: Exception, attempts: int
    ) -> None:
        customers = customers_named(record)
        for customer_id in customers:
            async with self._unit() as store:
                await suppress(store, self.processor, customer_id)
        reason = error_reason(exc)
        for customer_id in customers:
            log.critical(
                ALERT,
                extra=_fields(record)
                | {"reason": reason, "customer_id": customer_id, "attempts": attempts},
            )
        if not customers:
            # Nobody to suppress: the record names no customer. Still an alert.
            log.critical(ALERT, extra=_fields(record) | {"reason": f"unattributable:{reason}"[:64]})
        await self._dead_letter(record, exc, attempts)


def _fields(record: ConsumerRecord[Any, Any]) -> dict[str, Any]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


async def _raw_record(msg: StreamMessage[Any]) -> Any:  # noqa: ANN401 - FastStream's decoder type
    """FastStream decoder: the record untouched (a tombstone's null value must survive)."""
    return msg.raw_message


def register_feed(
    broker: KafkaBroker,
    feed: ConsentFeed,
    *,
    group_suffix: str | None,
) -> None:
    """Subscribe `feed` to `consent.state.v1` and `privacy.directives.v1`, declare its outputs.

    Args:
        broker: The service's broker.
        feed: The consumer.
        group_suffix: Consume as `<service>.<suffix>` instead of `<service>` (tests, replays).
    """
    service = feed.processor.service
    options = subscriber_kwargs(service, suffix=group_suffix)

    # Declared for the AsyncAPI document only: written to the outbox in the transaction of
    # the stop, published by the outbox relay.
    broker.publisher(
        ACK_TOPIC,
        title=f"{ACK_TOPIC}:{service}",
        description="The answer to a stop directive, once the stop is durable.",
        schema=ProcessingStopped,
    )
    broker.publisher(
        AUDIT_TOPIC,
        title=f"{AUDIT_TOPIC}:{service}",
        description="One audit event per purpose stopped.",
        schema=AuditEvent,
    )

    @broker.subscriber(
        STATE_TOPIC,
        decoder=_raw_record,
        title=f"{STATE_TOPIC}:{service}",
        description="Each customer's current consent (compacted; a tombstone forgets).",
        **options,
    )
    async def handle_consent_state(msg: KafkaMessage) -> None:
        await feed.on_state(msg.raw_message)

    @broker.subscriber(
        DIRECTIVES_TOPIC,
        decoder=_raw_record,
        title=f"{DIRECTIVES_TOPIC}:{service}",
        description="Stop directives; answered on privacy.acks.v1 once applied.",
        **options,
    )
    async def handle_directive(msg: KafkaMessage) -> None:
        await feed.on_directive(msg.raw_message)


def transactions(
    ctx: ServiceContext, store: Callable[[Connection], ViewStore]
) -> Callable[[], AbstractAsyncContextManager[ViewStore]]:
    """The `unit` of a `ConsentFeed`: a connection of the service's pool, in a transaction."""

    @asynccontextmanager
    async def unit() -> AsyncIterator[ViewStore]:
        async with ctx.pool.acquire() as conn, conn.transaction():
            yield store(conn)

    return unit


def make_dead_letter(
    broker: KafkaBroker, service: str
) -> Callable[[ConsumerRecord[Any, Any], Exception, int], Awaitable[None]]:
    """The `dead_letter` callable of a `ConsentFeed` publishing with `broker`."""

    async def publish(record: ConsumerRecord[Any, Any], exc: Exception, attempts: int) -> None:
        await dead_letter(broker, record, exc, attempts=attempts, service=service)

    return publish
