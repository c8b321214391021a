"""The records use case and its Kafka entry point: apply a batch of sealed commands.

`decode_command` opens one record of `records.commands.v1` (envelope in clear, the rest sealed
to this service) into its typed command; anything malformed is a `PermanentError` with a
machine-readable reason, so it is dead-lettered at once and never logged with its content.
`apply_commands` applies a batch in the caller's transaction: claim the event ids in the inbox,
lock the customers, read their current items and stored visits, plan the changes
(`domain.BatchPlanner`), write them, and enqueue one audit event per applied command and one
`CustomerRecord` snapshot per customer (with its analytics facts).

The subscriber takes up to `batch_max_records` records per poll and hands them to
`services.common.batch.process_batch`: the whole batch in one transaction, or, when that fails,
record by record so that a poison record is dead-lettered alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from faststream.kafka.annotations import KafkaMessage  # noqa: TC002 - FastStream reads it

from contracts.audit import AUDIT_TOPIC, AuditEvent
from contracts.records import CUSTOMER_TOPIC, CustomerRecord
from services.common import commands, crypto
from services.common.audit import SERVICE_ROLE
from services.common.batch import process_batch
from services.common.kafka import PermanentError, RetryPolicy, subscriber_kwargs
from services.records.domain import COMMAND_TYPES, BatchPlanner, CustomerCipher, RegisterError
from services.records.repository import PostgresRegister

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from aiokafka import ConsumerRecord
    from faststream.kafka import KafkaBroker
    from faststream.message import StreamMessage
    from pydantic import SecretStr

    from contracts.envelope import Event
    from contracts.sealing import TopicKey
    from services.common.runtime import ServiceContext
    from services.records.domain import Applied, RecordsCommand
    from services.records.repository import RegisterRepository
    from services.records.settings import RecordsSettings

log = logging.getLogger(__name__)

SERVICE: Final = "records"
"""The service name: schema, Kafka principal, consumer group, audit producer."""
COMMANDS_TOPIC: Final = "records.commands.v1"
"""The topic of the commands intake routes to the register."""
AUDIT_OUTCOME: Final = "success"


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one `apply_commands` call did.

    Attributes:
        applied: Commands applied.
        duplicates: Commands skipped because their event id was applied before.
        customers: Customers changed (one snapshot each).
    """

    applied: int
    duplicates: int
    customers: int


class TransitKey(commands.TransitKey):
    """The key of `records.commands.v1`, parsed on first use (building an app parses none)."""

    def __init__(self, keys: Mapping[str, SecretStr]) -> None:
        super().__init__(keys, COMMANDS_TOPIC)


def decode_command(record: ConsumerRecord[Any, Any], key: TopicKey) -> RecordsCommand:
    """Open one record of `records.commands.v1` into its command.

    Raises:
        PermanentError: `not_json`, `not_object`, `unexpected_type`, `sealed_invalid`,
            `sealed_undecryptable`, `invalid_command` or `key_mismatch`; the reason never
            quotes the content.
    """
    return commands.decode_sealed_command(record, key, COMMAND_TYPES)


def audit_event(applied: Applied) -> AuditEvent:
    """The audit event of one applied command (as `services.common.audit.emit` builds it)."""
    return AuditEvent.model_validate(
        {
            "producer": SERVICE,
            "actor": applied.producer,
            "actor_role": SERVICE_ROLE,
            "action": applied.action,
            "customer_id": applied.customer_id,
            "resource": applied.resource,
            "outcome": AUDIT_OUTCOME,
            "correlation_id": applied.correlation_id,
        }
    )


async def apply_commands(
    repo: RegisterRepository, commands: Sequence[RecordsCommand]
) -> BatchResult:
    """Apply commands, in order, inside the caller's transaction; idempotent per event id.

    Raises:
        PermanentError: `customer_erased` when a command is for a customer whose key was
            shredded (nothing may bring their data back), or a register rule's reason.
    """
    fresh = await repo.claim([c.event_id for c in commands])
    todo: list[RecordsCommand] = []
    for command in commands:
        if command.event_id in fresh:
            fresh.discard(command.event_id)  # a repeat within the batch is a duplicate too
            todo.append(command)
    if not todo:
        return BatchResult(applied=0, duplicates=len(commands), customers=0)
    customers = await repo.lock_customers([c.customer_id for c in todo])
    existing = [cid for cid, row in customers.items() if row.version > 0]
    current = await repo.current_items(existing)
    visits = await repo.visits(existing)
    try:
        keys = await repo.data_keys(list(customers))
    except crypto.KeyShreddedError:
        raise PermanentError("customer_erased") from None
    ciphers = {cid: CustomerCipher(keys[cid], cid) for cid in customers}
    planner = BatchPlanner(customers, current, ciphers, visits)
    try:
        for command in todo:
            planner.apply(command)
    except RegisterError as exc:
        raise PermanentError(exc.reason) from None
    plan = planner.finish()
    await repo.save(plan)
    events: list[tuple[str, Event]] = [(AUDIT_TOPIC, audit_event(a)) for a in plan.applied]
    events += [(CUSTOMER_TOPIC, s) for s in plan.snapshots]
    await repo.publish(events)
    return BatchResult(
        applied=len(todo), duplicates=len(commands) - len(todo), customers=len(plan.snapshots)
    )


def _records(msg: StreamMessage[Any]) -> tuple[ConsumerRecord[Any, Any], ...]:
    raw = msg.raw_message
    return tuple(raw) if isinstance(raw, tuple | list) else (raw,)


async def _raw_records(msg: StreamMessage[Any]) -> tuple[ConsumerRecord[Any, Any], ...]:
    """FastStream decoder: hand over the records untouched (no JSON decoding of the batch)."""
    return _records(msg)


def register(
    broker: KafkaBroker, ctx: ServiceContext, settings: RecordsSettings, transit: TransitKey
) -> None:
    """Attach the command subscriber to the broker (called once, when the app is built)."""
    policy = RetryPolicy.from_settings(settings)

    async def apply_all(records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        commands = [decode_command(r, transit.key) for r in records]
        started = time.perf_counter()
        async with ctx.pool.acquire() as conn, conn.transaction():
            result = await apply_commands(PostgresRegister(conn, ctx.keys), commands)
        log.debug(
            "batch applied",
            extra={
                "count": len(records),
                "applied": result.applied,
                "duplicates": result.duplicates,
                "customers": result.customers,
                "db_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )

    async def apply_one(record: ConsumerRecord[Any, Any]) -> None:
        await apply_all((record,))

    # Declared for the AsyncAPI document only: these events are written to the outbox in the
    # transaction of the change, and the outbox relay publishes them.
    broker.publisher(
        CUSTOMER_TOPIC,
        title=f"{CUSTOMER_TOPIC}:records",
        description="Each customer's current register entry (compacted), through the outbox.",
        schema=CustomerRecord,
    )
    broker.publisher(
        AUDIT_TOPIC,
        title=f"{AUDIT_TOPIC}:records",
        description="One audit event per applied command, through the outbox.",
        schema=AuditEvent,
    )

    @broker.subscriber(
        COMMANDS_TOPIC,
        batch=True,
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        decoder=_raw_records,
        title=f"{COMMANDS_TOPIC}:records",
        description="Validated commands for the register, sealed to records, applied in batches.",
        **subscriber_kwargs(SERVICE, suffix=settings.consumer_group_suffix),
    )
    async def handle_commands(msg: KafkaMessage) -> None:
        await process_batch(
            _records(msg),
            apply_all=apply_all,
            apply_one=apply_one,
            broker=broker,
            service=SERVICE,
            policy=policy,
        )
