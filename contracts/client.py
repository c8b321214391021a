"""A small client for clinic apps: build, seal and publish intake events; read rejections.

    async with IntakeClient.from_env() as client:
        event = CustomerRegistered(customer_id="A1001", producer="kiosk", ...)
        await client.submit(event)
        async for rejected in client.rejections({event.event_id}, timeout=10):
            show(rejected.reasons)

Every submission goes to `intake.submissions.v1` keyed by its customer number, with its payload
sealed to intake's public key (see `contracts.sealing`), so personal data never travels or rests
in clear on Kafka. Intake answers an invalid submission on `intake.rejected.v1` under the same
key, naming the submission's `event_id` and machine-readable reasons.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import TYPE_CHECKING, Any, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contracts import intake as _intake  # noqa: F401  (registers the intake event types)
from contracts.envelope import EVENT_TYPES, Event, new_event_id, utcnow
from contracts.intake import SubmissionRejected
from contracts.sealing import load_public_key, seal

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable
    from types import TracebackType
    from uuid import UUID

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

SUBMISSIONS = "intake.submissions.v1"
REJECTIONS = "intake.rejected.v1"


class LocalRejectionError(ValueError):
    """A document the client refuses to send: it could not be sealed or keyed.

    `reason` is machine-readable (`not_json`, `not_object`, `missing_customer_id`,
    `unknown_type`); the message carries no personal data.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IntakeClient:
    """Publishes sealed submissions to the front door as one principal (a clinic app)."""

    def __init__(  # noqa: PLR0913 - connection settings, keyword-only
        self,
        *,
        bootstrap_servers: str,
        username: str,
        password: str,
        intake_public_key: str,
        producer_name: str = "clinic-app",
        security_protocol: str = "SASL_PLAINTEXT",
    ) -> None:
        self._kafka: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "security_protocol": security_protocol,
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": username,
            "sasl_plain_password": password,
        }
        self._public_key: X25519PublicKey = load_public_key(intake_public_key)
        self.producer_name = producer_name
        self._producer: AIOKafkaProducer | None = None

    @classmethod
    def from_env(cls, *, username: str = "clinic-app", producer_name: str = "clinic-app") -> Self:
        """Configure from `REKISTERI_*` variables (written to `.rekisteri/env` by provisioning)."""
        var = username.upper().replace("-", "_")
        return cls(
            bootstrap_servers=os.environ["REKISTERI_KAFKA_BOOTSTRAP"],
            username=username,
            password=os.environ[f"REKISTERI_KAFKA_PASSWORD_{var}"],
            intake_public_key=os.environ["REKISTERI_INTAKE_PUBLIC_KEY"],
            producer_name=producer_name,
        )

    async def __aenter__(self) -> Self:
        self._producer = AIOKafkaProducer(
            **self._kafka, enable_idempotence=True, linger_ms=5, max_batch_size=256 * 1024
        )
        await self._producer.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def encode(self, document: dict[str, Any] | Event) -> tuple[bytes, bytes, UUID]:
        """Fill the envelope defaults, seal the payload; return (key, value, event_id).

        A typed `Event` is validated already; a plain document (e.g. a JSONL line) is sent as
        given, so intake — not the client — is the judge of its contents.
        """
        if isinstance(document, Event):
            doc: dict[str, Any] = json.loads(document.model_dump_json())
        elif isinstance(document, dict):
            doc = dict(document)
        else:
            raise LocalRejectionError("not_object")
        customer_id = doc.get("customer_id")
        if not isinstance(customer_id, str) or not customer_id:
            raise LocalRejectionError("missing_customer_id")
        doc.setdefault("event_id", str(new_event_id()))
        doc.setdefault("producer", self.producer_name)
        doc.setdefault("schema_version", 1)
        if "occurred_at" not in doc:
            doc["occurred_at"] = utcnow().isoformat()
        try:
            event_id = uuid.UUID(str(doc["event_id"]))
        except ValueError:
            raise LocalRejectionError("invalid_event_id") from None
        wire = seal(doc, self._public_key)
        return customer_id.encode(), json.dumps(wire, separators=(",", ":")).encode(), event_id

    def parse_line(self, line: bytes | str) -> dict[str, Any]:
        """Parse one JSONL line into a document, or refuse it locally (never sent in clear)."""
        try:
            doc = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise LocalRejectionError("not_json") from None
        if not isinstance(doc, dict):
            raise LocalRejectionError("not_object")
        return doc

    async def submit(self, document: dict[str, Any] | Event) -> UUID:
        """Seal and publish one submission; returns its event id once Kafka has it."""
        event_id, acked = await self.submit_nowait(document)
        await acked
        return event_id

    async def submit_nowait(
        self, document: dict[str, Any] | Event
    ) -> tuple[UUID, asyncio.Future[Any]]:
        """Seal and enqueue one submission; the future resolves when Kafka has it."""
        if self._producer is None:
            raise RuntimeError("use `async with IntakeClient(...)`")
        key, value, event_id = self.encode(document)
        return event_id, await self._producer.send(SUBMISSIONS, value, key=key)

    async def submit_many(self, documents: Iterable[dict[str, Any] | Event]) -> list[UUID]:
        """Publish many submissions, pipelined; returns their event ids in order."""
        ids: list[UUID] = []
        pending: list[asyncio.Future[Any]] = []
        for doc in documents:
            event_id, acked = await self.submit_nowait(doc)
            ids.append(event_id)
            pending.append(acked)
        await asyncio.gather(*pending)
        return ids

    async def rejections(
        self,
        event_ids: set[UUID] | None = None,
        *,
        idle_seconds: float = 10.0,
        from_beginning: bool = True,
    ) -> AsyncIterator[SubmissionRejected]:
        """Yield rejections (of `event_ids`, or all) until `idle_seconds` pass without one.

        Reads `intake.rejected.v1` without a consumer group (nothing is committed), so several
        tools can watch at once.
        """
        consumer = AIOKafkaConsumer(**self._kafka, enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            partitions = [
                TopicPartition(REJECTIONS, p)
                for p in sorted(await _partitions(consumer, REJECTIONS))
            ]
            consumer.assign(partitions)
            if from_beginning:
                await consumer.seek_to_beginning(*partitions)
            wanted = set(event_ids) if event_ids is not None else None
            while True:
                batch = await consumer.getmany(timeout_ms=int(idle_seconds * 1000))
                if not batch:
                    return
                for records in batch.values():
                    for record in records:
                        if record.value is None:
                            continue
                        rejected = SubmissionRejected.model_validate_json(record.value)
                        if wanted is None or rejected.submission_event_id in wanted:
                            yield rejected
                            if wanted is not None:
                                wanted.discard(rejected.submission_event_id)
                                if not wanted:
                                    return
        finally:
            await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """The topic's partitions (without a subscription, metadata is fetched on demand)."""
    partitions = await consumer._client.fetch_all_metadata()  # noqa: SLF001
    return set(partitions.partitions_for_topic(topic) or ())


def known_types() -> list[str]:
    """The event types intake knows."""
    return sorted(EVENT_TYPES)
