"""Intake's handler: a batch of submissions in, commands and rejections out through the outbox.

For each record of a poll, the CPU work comes first and outside any transaction: open the seal,
validate (`services.intake.domain.route_submission`), and turn the result into one outbox row,
either the normalised command sealed to its owner's public key (keeping the submission's
`event_id`, so the owner's inbox deduplicates end to end) or a `SubmissionRejected` for
`intake.rejected.v1`. A bad submission is never an exception; exceptions are infrastructure
faults. Then `services.common.batch.process_batch` applies the whole batch in one transaction:
one inbox claim per readable `event_id` (a repeated id writes nothing) and the outbox rows of
the new ones. If that fails, each record is applied in its own transaction with retries, and a
record that still fails goes to `intake.submissions.v1.dlq` alone.
"""

from __future__ import annotations

import binascii
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from faststream.kafka.annotations import KafkaMessage  # noqa: TC002 - resolved at runtime

from contracts.sealing import TopicKey, load_private_key, seal
from services.common.batch import process_batch
from services.common.kafka import PermanentError, RetryPolicy, subscriber_kwargs
from services.intake.domain import (
    PRODUCER,
    SUPPORTED_OWNERS,
    Accepted,
    Owner,
    Rejected,
    route_submission,
)
from services.intake.repository import OutboxRow

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import date
    from uuid import UUID

    from aiokafka import ConsumerRecord
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from faststream.kafka import KafkaBroker
    from faststream.message import StreamMessage

    from services.intake.repository import IntakeRepository
    from services.intake.settings import IntakeSettings

log = logging.getLogger(__name__)

SERVICE: Final = "intake"
SUBMISSIONS_TOPIC: Final = "intake.submissions.v1"
REJECTIONS_TOPIC: Final = "intake.rejected.v1"


class TransitKeyError(ValueError):
    """Intake's transit keys are missing or malformed (the message names which, never a key)."""


@dataclass(frozen=True, slots=True)
class TransitKeys:
    """The keys intake seals with: its own private key, and each supported owner's public key.

    Attributes:
        private: Intake's X25519 key; clinic apps seal submissions to its public half.
        owners: The public key of every owner intake forwards to.
    """

    private: X25519PrivateKey = field(repr=False)
    owners: Mapping[Owner, TopicKey] = field(repr=False)

    @classmethod
    def from_settings(
        cls, settings: IntakeSettings, supported: frozenset[Owner] = SUPPORTED_OWNERS
    ) -> TransitKeys:
        """Load intake's `transit_private_key` and the `topic_keys` of the owners' topics.

        Raises:
            TransitKeyError: The private key, or the topic key of a supported owner's command
                topic, is missing or malformed.
        """
        try:
            private = load_private_key(settings.transit_private_key.get_secret_value())
        except (binascii.Error, ValueError):
            raise TransitKeyError("transit_private_key is missing or malformed") from None
        owners: dict[Owner, TopicKey] = {}
        for owner in sorted(supported):
            try:
                secret = settings.topic_keys[owner.commands_topic]
                owners[owner] = TopicKey.from_b64(secret.get_secret_value())
            except (KeyError, binascii.Error, ValueError):
                raise TransitKeyError(
                    f"topic_keys has no valid key for {owner.commands_topic}"
                ) from None
        return cls(private=private, owners=MappingProxyType(owners))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one submission becomes, decided before any transaction.

    Attributes:
        claim: The submission's `event_id`, claimed in the inbox; None when it could not be
            read (such a submission is rejected every time it is seen).
        row: The outbox row: the sealed command, or the rejection.
        accepted: Whether it is a command (else a rejection).
    """

    claim: UUID | None
    row: OutboxRow
    accepted: bool


@dataclass(frozen=True, slots=True)
class Applied:
    """What one transaction wrote: commands and rejections, and duplicates skipped."""

    accepted: int
    rejected: int
    duplicates: int


class Intake:
    """Intake's use case: validate and route submissions, exactly once per `event_id`.

    Args:
        repository: Where claims and outbox rows are written.
        keys: The transit keys; None until `use_keys` (the app loads them at start-up).
        supported: Owners that exist yet; valid submissions for others are rejected.
        clock: Today's date, for the checks against the future.
    """

    def __init__(
        self,
        repository: IntakeRepository,
        *,
        keys: TransitKeys | None = None,
        supported: frozenset[Owner] = SUPPORTED_OWNERS,
        clock: Callable[[], date] = lambda: datetime.now(UTC).date(),
    ) -> None:
        self._repository = repository
        self._keys = keys
        self._supported = supported
        self._clock = clock
        self.counts: Counter[str] = Counter()
        """Committed totals: `accepted`, `rejected`, `duplicates`, `dead_lettered`."""

    def use_keys(self, keys: TransitKeys) -> None:
        """Set the transit keys (once, at start-up, before any submission is handled)."""
        self._keys = keys

    @property
    def keys(self) -> TransitKeys:
        """The transit keys; a programming error before `use_keys`."""
        if self._keys is None:
            raise RuntimeError("intake has no transit keys yet")
        return self._keys

    def prepare(self, value: bytes | None, key: bytes | None, today: date) -> Outcome:
        """Open, validate and route one submission into its outbox row (CPU only, no I/O).

        Args:
            value: The record value.
            key: The record key (None or empty: none).
            today: The date the checks against the future use.
        """
        result = route_submission(
            value,
            key=key or None,
            today=today,
            supported=self._supported,
            private_key=self.keys.private,
        )
        if isinstance(result, Accepted):
            return self._command(result)
        return _rejection(result)

    def _command(self, accepted: Accepted) -> Outcome:
        event = accepted.event
        document = event.model_dump(mode="json") | {"producer": PRODUCER}
        wire = seal(document, self.keys.owners[accepted.owner])
        row = OutboxRow(
            event_id=event.event_id,
            topic=accepted.topic,
            key=event.customer_id,
            payload=json.dumps(wire, separators=(",", ":")).encode(),
            event_type=event.type,
            correlation_id=event.correlation_id,
        )
        return Outcome(claim=event.event_id, row=row, accepted=True)

    async def apply(self, outcomes: Sequence[Outcome]) -> Applied:
        """Claim and write `outcomes` in one transaction; a claimed id before writes nothing.

        Raises:
            Exception: A database fault; nothing of `outcomes` was written.
        """
        claims = [o.claim for o in outcomes if o.claim is not None]
        async with self._repository.transaction() as unit:
            new = await unit.claim(claims)
            rows: list[OutboxRow] = []
            accepted = 0
            for outcome in outcomes:
                if outcome.claim is not None:
                    if outcome.claim not in new:
                        continue
                    new.discard(outcome.claim)  # a second copy in this batch is a duplicate
                rows.append(outcome.row)
                accepted += outcome.accepted
            await unit.enqueue(rows)
        return Applied(
            accepted=accepted,
            rejected=len(rows) - accepted,
            duplicates=len(outcomes) - len(rows),
        )

    async def handle(
        self,
        records: Sequence[ConsumerRecord[Any, Any]],
        *,
        broker: KafkaBroker,
        policy: RetryPolicy,
    ) -> None:
        """Handle one poll: prepare every record, then apply them all (or one by one).

        Raises:
            Exception: A dead-letter publish failed; the batch must not be committed.
        """
        started = time.perf_counter()
        self.keys  # noqa: B018 - fail the batch, not each record, if the keys are missing
        today = self._clock()
        prepared = {id(record): self._prepare_safely(record, today) for record in records}
        cpu = time.perf_counter() - started

        async def apply_all(batch: Sequence[ConsumerRecord[Any, Any]]) -> None:
            outcomes = [_outcome(prepared[id(record)]) for record in batch]
            self._count(await self.apply(outcomes))

        async def apply_one(record: ConsumerRecord[Any, Any]) -> None:
            self._count(await self.apply([_outcome(prepared[id(record)])]))

        dead = await process_batch(
            records,
            apply_all=apply_all,
            apply_one=apply_one,
            broker=broker,
            service=SERVICE,
            policy=policy,
        )
        self.counts["dead_lettered"] += dead
        log.debug(
            "submissions handled",
            extra={
                "count": len(records),
                "dead_lettered": dead,
                "cpu_ms": round(cpu * 1000, 2),
                "db_ms": round((time.perf_counter() - started - cpu) * 1000, 2),
            },
        )

    def _prepare_safely(self, record: ConsumerRecord[Any, Any], today: date) -> Outcome | Exception:
        try:
            return self.prepare(record.value, record.key, today)
        except Exception as exc:  # noqa: BLE001 - a bug must cost one record, not the partition
            log.error(  # noqa: TRY400 - the traceback could quote the submission
                "submission could not be prepared; it goes to the dead-letter topic",
                extra={
                    "partition": record.partition,
                    "offset": record.offset,
                    "reason": type(exc).__name__,
                },
            )
            return PermanentError("intake_prepare_failed")

    def _count(self, applied: Applied) -> None:
        self.counts["accepted"] += applied.accepted
        self.counts["rejected"] += applied.rejected
        self.counts["duplicates"] += applied.duplicates


def _outcome(prepared: Outcome | Exception) -> Outcome:
    if isinstance(prepared, Exception):
        raise prepared
    return prepared


def _rejection(rejected: Rejected) -> Outcome:
    event = rejected.event
    row = OutboxRow(
        event_id=event.event_id,
        topic=REJECTIONS_TOPIC,
        key=rejected.key.decode() if rejected.key is not None else None,
        payload=rejected.to_bytes(),
        event_type=event.type,
        correlation_id=event.correlation_id,
    )
    return Outcome(claim=event.submission_event_id, row=row, accepted=False)


def _raw_records(msg: StreamMessage[Any]) -> Any:  # noqa: ANN401 - FastStream's decoder type
    """FastStream decoder: hand the handler the raw records, no JSON decoding on the way."""
    return msg.raw_message


def register(broker: KafkaBroker, intake: Intake, settings: IntakeSettings) -> None:
    """Subscribe `intake` to `intake.submissions.v1` in batches, as consumer group `intake`."""
    policy = RetryPolicy.from_settings(settings)
    subscriber = broker.subscriber(
        SUBMISSIONS_TOPIC,
        batch=True,
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        decoder=_raw_records,
        description="Sealed submissions from clinic apps, validated and routed in batches.",
        **subscriber_kwargs(SERVICE, suffix=settings.consumer_group_suffix),
    )

    @subscriber
    async def handle_submissions(message: KafkaMessage) -> None:
        records = message.raw_message
        await intake.handle(
            records if isinstance(records, tuple | list) else (records,),
            broker=broker,
            policy=policy,
        )
