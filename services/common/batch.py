"""Batch consumption with poison isolation: fast in the common case, exact in the bad one.

High-volume consumers (intake, records) take a batch of records from one poll and apply it in
one database transaction: one commit instead of hundreds. When that fails, the batch is applied
again one record at a time, each in its own transaction with bounded retries, so one poison
record is dead-lettered alone while the records around it are applied. Kafka offsets are
committed only after `process_batch` returns (FastStream's `NACK_ON_ERROR` on the subscriber);
an inbox on `event_id` inside each transaction makes the replays idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from services.common.kafka import dead_letter, error_reason, is_outage, is_permanent

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from aiokafka import ConsumerRecord
    from faststream.kafka import KafkaBroker

    from services.common.kafka import RetryPolicy

log = logging.getLogger(__name__)


async def process_batch(  # noqa: PLR0913 - the whole strategy, keyword-only
    records: Sequence[ConsumerRecord[Any, Any]],
    *,
    apply_all: Callable[[Sequence[ConsumerRecord[Any, Any]]], Awaitable[None]],
    apply_one: Callable[[ConsumerRecord[Any, Any]], Awaitable[None]],
    broker: KafkaBroker,
    service: str,
    policy: RetryPolicy,
) -> int:
    """Apply `records` with `apply_all`; on failure, one by one with `apply_one`.

    Args:
        records: The records of one poll, in partition order.
        apply_all: Applies every record in one transaction (all or nothing).
        apply_one: Applies one record in its own transaction.
        broker: Where dead letters are published.
        service: The consuming service (`x-consumer` of dead letters).
        policy: Retries of a single record before it is dead-lettered.

    Returns:
        How many records were dead-lettered.

    Raises:
        Exception: Postgres or Kafka is unavailable (`kafka.is_outage`): the batch stays
            uncommitted and is redelivered, nothing is dead-lettered for an outage. Or a
            dead-letter publish failed; nothing of the batch may be committed.
    """
    if not records:
        return 0
    try:
        await apply_all(records)
    except Exception as exc:
        if is_outage(exc):
            raise  # not the records' fault: leave the whole batch for redelivery
        log.warning(
            "batch failed; applying its records one by one",
            extra={"reason": error_reason(exc), "count": len(records)},
        )
    else:
        return 0
    dead = 0
    for record in records:
        failure = await _apply_with_retries(record, apply_one, policy)
        if failure is not None:
            error, attempts = failure
            await dead_letter(broker, record, error, attempts=attempts, service=service)
            dead += 1
    return dead


async def _apply_with_retries(
    record: ConsumerRecord[Any, Any],
    apply_one: Callable[[ConsumerRecord[Any, Any]], Awaitable[None]],
    policy: RetryPolicy,
) -> tuple[Exception, int] | None:
    """Apply one record; None on success, else the last error and the attempts made."""
    delays = policy.delays()
    attempt = 0
    while True:
        attempt += 1
        try:
            await apply_one(record)
        except Exception as exc:
            if is_outage(exc) and attempt > len(delays):
                raise  # an outage began mid-batch: redeliver, never dead-letter
            if is_permanent(exc) or attempt > len(delays):
                return exc, attempt
            await asyncio.sleep(delays[attempt - 1])
        else:
            return None
