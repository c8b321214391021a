"""The consent use cases and their Kafka entry points: commands in, directives' answers in.

`decode_command` opens one record of `consent.commands.v1` (envelope in clear, the rest sealed
with the topic key) into its typed command; anything malformed is a `PermanentError` with a
machine-readable reason, so it is dead-lettered at once and never logged with its content.
`apply_command` applies it in the caller's transaction: claim the event id in the inbox (a
repeat is a no-op), lock the customer's row, decide (`domain.decide`) and write the history,
the state, the directive and the outbox events together.

Consent fails closed (PATTERNS §1.5): when a command cannot be applied (not for an outage,
which is retried and redelivered), the customer named by the record's key is held —
every purpose suppressed, a `hold` directive published — before the record is dead-lettered,
and an alert is logged. Applying that very command later (a replay from the dead-letter topic)
releases the hold.

`record_ack` reads the processors' `ProcessingStopped` answers from `privacy.acks.v1`: each is
recorded once, and the directive is fully applied when every expected service has answered;
the time from the directive's commit to then is stored in milliseconds. Answers to directives
consent did not issue (the rights service's) and other event types are ignored.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from faststream.kafka.annotations import KafkaMessage  # noqa: TC002 - FastStream reads it
from pydantic import ValidationError

from contracts.audit import AUDIT_TOPIC, AuditEvent
from contracts.consent import (
    ACKS_TOPIC,
    COMMANDS_TOPIC,
    DIRECTIVES_TOPIC,
    EVENTS_TOPIC,
    STATE_TOPIC,
    ConsentRecorded,
    ConsentState,
    ProcessingStopped,
    ProcessingStopRequested,
)
from contracts.intake import ConsentCaptured
from services.common import commands
from services.common.kafka import PermanentError, error_reason, is_outage, subscriber_kwargs
from services.consent.domain import (
    COMMAND_TYPES,
    ConsentError,
    decide,
    hold,
    notice_id_of,
)
from services.consent.repository import ACKS_CONSUMER, COMMANDS_CONSUMER, PostgresConsent

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from uuid import UUID

    from aiokafka import ConsumerRecord
    from faststream.kafka import KafkaBroker
    from faststream.message import StreamMessage
    from pydantic import SecretStr

    from contracts.sealing import TopicKey
    from services.common.runtime import ServiceContext
    from services.consent.domain import ConsentCommand, Decision
    from services.consent.repository import ConsentRepository
    from services.consent.settings import ConsentSettings

log = logging.getLogger(__name__)

SERVICE: Final = "consent"
"""The service name: schema, Kafka principal, consumer group, producer."""
ACK_TYPE: Final = "ProcessingStopped"
"""The answer type on `privacy.acks.v1` consent counts (others are ignored)."""
_DEAD_LETTER_NAMESPACE: Final = uuid.UUID("5f0c2e4a-3b7d-4c1e-9a57-6f3b2d9e8c10")


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What `apply_command` did.

    Attributes:
        applied: False when the command was applied before (a duplicate: nothing written).
        version: The customer's consent version afterwards (None for a duplicate).
        directive_id: The stop directive it published, if any.
    """

    applied: bool
    version: int | None = None
    directive_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class AckResult:
    """What `record_ack` did.

    Attributes:
        outcome: `duplicate` (the ack event was seen), `unknown_directive` (not consent's),
            `repeated` (that service had answered already), `recorded`, or `fully_applied`
            (this answer was the last one expected).
        latency_ms: For `fully_applied`: commit-to-fully-applied time in milliseconds.
    """

    outcome: str
    latency_ms: int | None = None


class TransitKey(commands.TransitKey):
    """The key of `consent.commands.v1`, parsed on first use (building an app parses none)."""

    def __init__(self, keys: Mapping[str, SecretStr]) -> None:
        super().__init__(keys, COMMANDS_TOPIC)


_record_key = commands.record_key


def decode_command(record: ConsumerRecord[Any, Any], key: TopicKey) -> ConsentCommand:
    """Open one record of `consent.commands.v1` into its command.

    Raises:
        PermanentError: `not_json`, `not_object`, `unexpected_type`, `sealed_invalid`,
            `sealed_undecryptable`, `invalid_command` or `key_mismatch`; the reason never
            quotes the content.
    """
    return commands.decode_sealed_command(record, key, COMMAND_TYPES)


def decode_ack(record: ConsumerRecord[Any, Any]) -> ProcessingStopped | None:
    """Read one record of `privacy.acks.v1`: a `ProcessingStopped`, or None for anything else.

    Raises:
        PermanentError: `not_json`, `invalid_ack` or `key_mismatch`.
    """
    value = record.value
    if value is None:
        return None
    try:
        doc = json.loads(value)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PermanentError("not_json") from None
    if not isinstance(doc, dict) or doc.get("type") != ACK_TYPE:
        return None  # e.g. the rights service's ErasureCompleted
    try:
        ack = ProcessingStopped.model_validate(doc)
    except ValidationError:
        raise PermanentError("invalid_ack") from None
    if _record_key(record) != ack.customer_id:
        raise PermanentError("key_mismatch")
    return ack


def _now() -> datetime:
    return datetime.now(UTC)


async def apply_command(
    repo: ConsentRepository, command: ConsentCommand, *, now: datetime | None = None
) -> CommandResult:
    """Apply one command inside the caller's transaction; a repeated event id is a no-op.

    Raises:
        PermanentError: The command is refused by the domain (its reason code).
    """
    if not await repo.claim(COMMANDS_CONSUMER, command.event_id):
        return CommandResult(applied=False)
    state = await repo.lock(command.customer_id)
    known = None
    if isinstance(command, ConsentCaptured) and command.notice_sha256 is None:
        known = await repo.notice_sha256(
            notice_id_of(command), command.notice_version, command.language
        )
    try:
        decision = decide(state, command, now=now or _now(), known_notice_sha256=known)
    except ConsentError as exc:
        raise PermanentError(exc.reason) from None
    await repo.save(state.version, decision)
    directive = decision.directive
    return CommandResult(
        applied=True,
        version=decision.state.version,
        directive_id=directive.directive_id if directive is not None else None,
    )


async def hold_customer(  # noqa: PLR0913 - the hold's whole provenance, keyword-only
    repo: ConsentRepository,
    customer_id: str,
    *,
    command_id: UUID,
    reason: str,
    correlation_id: UUID | None = None,
    now: datetime | None = None,
) -> Decision | None:
    """Fail closed for a customer whose command `command_id` could not be applied.

    Returns the decision written, or None when that command already holds the customer.
    """
    state = await repo.lock(customer_id)
    decision = hold(
        state,
        command_id,
        reason,
        now=now or _now(),
        correlation_id=correlation_id or command_id,
    )
    if decision is not None:
        await repo.save(state.version, decision)
    return decision


def fully_applied(expected: Iterable[str], answered: Iterable[str]) -> bool:
    """Whether every expected service has answered."""
    return set(expected) <= set(answered)


async def record_ack(repo: ConsentRepository, ack: ProcessingStopped) -> AckResult:
    """Record one answer inside the caller's transaction; idempotent per event and service.

    Raises:
        PermanentError: `ack_mismatch` when the answer names another customer or version
            than its directive.
    """
    if not await repo.claim(ACKS_CONSUMER, ack.event_id):
        return AckResult("duplicate")
    directive = await repo.lock_directive(ack.directive_id)
    if directive is None:
        return AckResult("unknown_directive")
    if directive.customer_id != ack.customer_id or directive.consent_version != ack.consent_version:
        raise PermanentError("ack_mismatch")
    added = await repo.add_ack(ack)
    answered = {*directive.acks, ack.service}
    if directive.fully_applied_at is None and fully_applied(directive.expected_services, answered):
        latency = await repo.mark_fully_applied(directive.directive_id)
        if latency is not None:
            return AckResult("fully_applied", latency)
    return AckResult("recorded" if added else "repeated")


def command_id_of(record: ConsumerRecord[Any, Any]) -> UUID:
    """The event id a failed command record holds (so a replay releases its hold).

    When the envelope cannot be read, an id derived from the record's topic, partition and
    offset (stable across redeliveries of that record).
    """
    try:
        wire = json.loads(record.value or b"")
        return uuid.UUID(str(wire["event_id"]))
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        origin = f"{record.topic}:{record.partition}:{record.offset}"
        return uuid.uuid5(_DEAD_LETTER_NAMESPACE, origin)


async def fail_closed(
    ctx: ServiceContext, record: ConsumerRecord[Any, Any], exc: Exception
) -> None:
    """Hold the customer of a command record that failed, and raise the alert.

    Never raises: the caller re-raises the original error, which dead-letters the record.
    """
    reason = error_reason(exc)
    customer_id = _record_key(record)
    fields: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "reason": reason,
    }
    if customer_id is None:
        log.critical(
            "consent command failed and names no customer; nobody could be held", extra=fields
        )
        return
    fields["customer_id"] = customer_id
    try:
        async with ctx.pool.acquire() as conn, conn.transaction():
            decision = await hold_customer(
                PostgresConsent(conn), customer_id, command_id=command_id_of(record), reason=reason
            )
    except Exception as hold_exc:  # noqa: BLE001 - the alert must be logged whatever failed
        log.critical(
            "consent command failed and the customer could not be held",
            extra=fields | {"hold_error": type(hold_exc).__name__},
        )
        return
    log.critical(
        "consent command failed; customer held (every purpose stopped) until it is applied",
        extra=fields | {"new_hold": decision is not None},
    )


def _record(msg: StreamMessage[Any]) -> ConsumerRecord[Any, Any]:
    raw = msg.raw_message
    return raw[0] if isinstance(raw, tuple | list) else raw


async def _raw_record(msg: StreamMessage[Any]) -> ConsumerRecord[Any, Any]:
    """FastStream decoder: hand over the record untouched (no JSON decoding)."""
    return _record(msg)


def register(
    broker: KafkaBroker, ctx: ServiceContext, settings: ConsentSettings, transit: TransitKey
) -> None:
    """Attach the command and ack subscribers to the broker (called once, at build time)."""
    for topic, schema, what in (
        (EVENTS_TOPIC, ConsentRecorded, "The append-only consent history, through the outbox."),
        (STATE_TOPIC, ConsentState, "Each customer's current consent (compacted), via outbox."),
        (DIRECTIVES_TOPIC, ProcessingStopRequested, "Stop directives, through the outbox."),
        (AUDIT_TOPIC, AuditEvent, "One audit event per change, through the outbox."),
    ):
        # Declared for the AsyncAPI document only: the outbox relay publishes these.
        broker.publisher(topic, title=f"{topic}:consent", description=what, schema=schema)

    @broker.subscriber(
        COMMANDS_TOPIC,
        decoder=_raw_record,
        title=f"{COMMANDS_TOPIC}:consent",
        description="Consent commands sealed with the topic key, applied one by one.",
        **subscriber_kwargs(SERVICE, suffix=settings.consumer_group_suffix),
    )
    async def handle_command(msg: KafkaMessage) -> None:
        record = _record(msg)
        started = time.perf_counter()
        try:
            command = decode_command(record, transit.key)
            async with ctx.pool.acquire() as conn, conn.transaction():
                result = await apply_command(PostgresConsent(conn), command)
        except Exception as exc:
            if not is_outage(exc):
                await fail_closed(ctx, record, exc)
            raise
        log.debug(
            "consent command handled",
            extra={
                "applied": result.applied,
                "version": result.version,
                "directive": result.directive_id is not None,
                "db_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )

    @broker.subscriber(
        ACKS_TOPIC,
        decoder=_raw_record,
        title=f"{ACKS_TOPIC}:consent",
        description="Processors' answers to directives; marks directives fully applied.",
        **subscriber_kwargs(SERVICE, suffix=settings.consumer_group_suffix),
    )
    async def handle_ack(msg: KafkaMessage) -> None:
        ack = decode_ack(_record(msg))
        if ack is None:
            return
        async with ctx.pool.acquire() as conn, conn.transaction():
            result = await record_ack(PostgresConsent(conn), ack)
        if result.outcome == "fully_applied":
            log.info(
                "directive fully applied",
                extra={"customer_id": ack.customer_id, "latency_ms": result.latency_ms},
            )
