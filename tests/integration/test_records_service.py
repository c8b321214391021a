"""The records service, in process, against the real Kafka and PostgreSQL with its own credentials.

Intake's principal publishes commands sealed to records' public key on `records.commands.v1`;
records (its own consumer group for the test, positioned at the end of the topic, so it handles
only this run's commands) must apply them to the `records` schema, keep the history of a changed
contact, ignore a redelivered event id, dead-letter an unsealable record while applying its
neighbours, and publish one encrypted `CustomerRecord` per customer per batch to
`records.customer.v1` with no canary personal data in clear. The schema and topics are shared, so
customer numbers are unique per run and the readers keep only this run's keys.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from faststream import TestApp

from contracts.audit import AuditEvent
from contracts.records import CustomerRecord
from contracts.sealing import TopicKey, seal
from contracts.topics import all_topics
from services.common import crypto
from services.common.runtime import ServiceContext
from services.records.app import build
from services.records.domain import CustomerView, ItemVersion
from services.records.repository import load_customer, load_history
from services.records.settings import RecordsSettings
from tests.support.infra import Infra, find_infra
from tests.support.kafka import start_group_at_end
from tests.unit.test_records_domain import (
    CANARIES,
    CANARY_EMAIL,
    at,
    contact_change,
    customer_id,
    feedback,
    registration,
    visit,
)

pytestmark = [pytest.mark.real, pytest.mark.timeout(180)]

COMMANDS = "records.commands.v1"
DLQ = "records.commands.v1.dlq"
SNAPSHOTS = "records.customer.v1"
AUDIT = "audit.events.v1"


@pytest.fixture(scope="module")
def infra() -> Infra:
    return find_infra()


def settings_for(infra: Infra, group_suffix: str) -> RecordsSettings:
    """Records' own settings (`RECORDS_*` of the provisioned environment), its own test group."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in infra.service_env("records").items():
            env.setenv(name, value)
        return RecordsSettings(
            consumer_group_suffix=group_suffix,
            health_port=0,
            batch_max_records=100,
            max_retries=1,
            retry_backoff_ms=50,
        )


class Tail:
    """A group-less reader of one topic from its end at creation; keeps this run's records."""

    def __init__(self, infra: Infra, principal: str, name: str, keys: set[bytes]) -> None:
        self.consumer = AIOKafkaConsumer(
            **infra.kafka_client_args(principal), group_id=None, enable_auto_commit=False
        )
        self.name = name
        self.keys = keys
        self.records: list[ConsumerRecord[bytes, bytes]] = []

    async def start(self) -> None:
        await self.consumer.start()
        count = next(t.partitions for t in all_topics() if t.name == self.name)
        partitions = [TopicPartition(self.name, p) for p in range(count)]
        self.consumer.assign(partitions)
        for tp, end in (await self.consumer.end_offsets(partitions)).items():
            self.consumer.seek(tp, end)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def read(self, seconds: float = 0.3) -> None:
        batches = await self.consumer.getmany(timeout_ms=int(seconds * 1000))
        for records in batches.values():
            self.records.extend(r for r in records if r.key in self.keys)

    def of(self, key: str) -> list[ConsumerRecord[bytes, bytes]]:
        return [r for r in self.records if r.key == key.encode()]


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 60.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@asynccontextmanager
async def running_records(settings: RecordsSettings) -> AsyncIterator[ServiceContext]:
    app, ctx = build(settings)
    async with TestApp(app):
        yield ctx


async def view(ctx: ServiceContext, cid: str) -> CustomerView | None:
    async with ctx.pool.acquire() as conn:
        return await load_customer(conn, ctx.keys, cid)


def sealed(command: Any, public_key: str) -> bytes:
    """The command as intake forwards it: `producer` intake, sealed with the topic key."""
    document = command.model_copy(update={"producer": "intake"}).model_dump(mode="json")
    return json.dumps(seal(document, TopicKey.from_b64(public_key))).encode()


@dataclass
class Outcome:
    """What the scenario left behind, for the tests below to check."""

    a: str
    b: str
    poison: str
    registration_a: Any
    view_a: CustomerView
    view_b: CustomerView
    history_a: list[ItemVersion]
    key_a: crypto.DataKey
    poison_view: CustomerView | None
    tails: dict[str, Tail]


@pytest.fixture(scope="module")
async def outcome(infra: Infra) -> Outcome:
    """Run records on a scenario: A and B registered and changed, a poison record between."""
    run = customer_id("run").lower()
    settings = settings_for(infra, f"test-{run}")
    public = settings.topic_keys["records.commands.v1"].get_secret_value()
    a, b, poison = customer_id("A"), customer_id("B"), customer_id("P")
    keys = {k.encode() for k in (a, b, poison)}
    tails = {
        SNAPSHOTS: Tail(infra, "rights", SNAPSHOTS, keys),
        AUDIT: Tail(infra, "compliance", AUDIT, keys),
        DLQ: Tail(infra, "operator", DLQ, keys),
    }
    producer = AIOKafkaProducer(
        **infra.kafka_client_args("intake"), enable_idempotence=True, acks="all"
    )
    reg_a = registration(a)
    unsealable = json.loads(sealed(registration(poison), public))
    unsealable["sealed"] = base64.b64encode(b"\x00" * 80).decode()
    first = [
        (a, sealed(reg_a, public)),
        (poison, json.dumps(unsealable).encode()),
        (a, sealed(contact_change(a, at(1), emails=["changed@example.com"]), public)),
        (b, sealed(registration(b), public)),
        (a, sealed(visit(a, at(2)), public)),
        (b, sealed(feedback(b, at(3)), public)),
    ]
    then = [
        # A redelivered registration (same event id) is a no-op; the next change applies.
        (a, sealed(reg_a, public)),
        (a, sealed(contact_change(a, at(4), phones=[]), public)),
    ]
    try:
        for tail in tails.values():
            await tail.start()
        await producer.start()
        await start_group_at_end(infra, "records", f"records.test-{run}", COMMANDS)
        async with running_records(settings) as ctx:
            for key, value in first:
                await producer.send_and_wait(COMMANDS, value, key=key.encode())
            await eventually(lambda: versions_are(ctx, {a: 3, b: 2}), what="the first batch")
            for key, value in then:
                await producer.send_and_wait(COMMANDS, value, key=key.encode())
            await eventually(lambda: phones_gone(ctx, a), what="the last change")
            await eventually(lambda: all_published(tails, a, b, poison), what="the events")
            view_a, view_b = await view(ctx, a), await view(ctx, b)
            assert view_a is not None
            assert view_b is not None
            async with ctx.pool.acquire() as conn:
                history_a = await load_history(conn, ctx.keys, a, "emails")
            key_a = await ctx.keys.get(None, a)
            assert key_a is not None
            poison_view = await view(ctx, poison)
    finally:
        await producer.stop()
        for tail in tails.values():
            await tail.stop()
    return Outcome(a, b, poison, reg_a, view_a, view_b, history_a, key_a, poison_view, tails)


async def versions_are(ctx: ServiceContext, expected: dict[str, int]) -> bool:
    for cid, version in expected.items():
        current = await view(ctx, cid)
        if current is None or current.version != version:
            return False
    return True


async def phones_gone(ctx: ServiceContext, cid: str) -> bool:
    current = await view(ctx, cid)
    return current is not None and current.version == 4 and current.value("phones") is None


async def all_published(tails: dict[str, Tail], a: str, b: str, poison: str) -> bool:
    for tail in tails.values():
        await tail.read()
    snaps = tails[SNAPSHOTS].of(a)
    last = CustomerRecord.model_validate_json(snaps[-1].value) if snaps else None
    return (
        last is not None
        and last.version == 4
        and bool(tails[SNAPSHOTS].of(b))
        and len(tails[AUDIT].of(a)) == 4
        and bool(tails[DLQ].of(poison))
    )


def test_commands_land_in_the_register_with_history(outcome: Outcome) -> None:
    va, vb = outcome.view_a, outcome.view_b
    assert va.version == 4  # registration, change, visit, change: the duplicate added nothing
    assert va.registered_at == outcome.registration_a.occurred_at
    assert va.value("emails") == ["changed@example.com"]
    assert va.value("phones") is None
    assert va.history["emails"] == 2
    assert va.history["phones"] == 1
    assert [v.value for v in outcome.history_a] == [[CANARY_EMAIL], ["changed@example.com"]]
    assert outcome.history_a[0].valid_to == outcome.history_a[1].valid_from == at(1)
    assert len(va.visits) == 1
    assert va.visits[0].data_class == "patient_record"
    assert va.data_classes == ("billing", "customer_register", "patient_record")
    assert vb.version == 2
    assert vb.feedback[0].text.startswith("Canary feedback")


def test_an_unsealable_record_is_dead_lettered_alone(outcome: Outcome) -> None:
    assert outcome.poison_view is None
    (dead,) = outcome.tails[DLQ].of(outcome.poison)
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["x-error"] == "sealed_undecryptable"
    assert headers["x-consumer"] == "records"
    assert headers["x-original-topic"] == COMMANDS
    assert outcome.view_b.version == 2  # its neighbours were applied


def test_snapshots_are_encrypted_current_entries_in_version_order(outcome: Outcome) -> None:
    records = outcome.tails[SNAPSHOTS].of(outcome.a)
    snaps = [CustomerRecord.model_validate_json(r.value) for r in records]
    versions = [s.version for s in snaps]
    assert versions == sorted(set(versions))
    last = snaps[-1]
    assert (last.version, last.registered) == (4, True)
    aad = crypto.associated_data(outcome.a, "CustomerRecord", 1)
    pii = crypto.decrypt_fields(outcome.key_a, last.pii, aad)
    values = {k: json.loads(v) for k, v in pii.items()}
    assert values["emails"] == ["changed@example.com"]
    assert "phones" not in values
    assert values["name"] == outcome.view_a.value("name")
    assert last.sources["emails"] == "customer"
    headers = {k: v.decode() for k, v in records[-1].headers}
    assert headers["content-type"] == "application/json"
    assert headers["event_type"] == "CustomerRecord"
    assert headers["event_id"] == str(last.event_id)


def test_one_audit_event_per_applied_command(outcome: Outcome) -> None:
    records = outcome.tails[AUDIT].of(outcome.a)
    audits = [AuditEvent.model_validate_json(r.value) for r in records]
    assert [e.action for e in audits] == ["create", "update", "create", "update"]
    assert [e.resource for e in audits] == [
        "records.customer",
        "records.customer",
        "records.visit",
        "records.customer",
    ]
    assert {(e.actor, e.producer, e.outcome) for e in audits} == {("intake", "records", "success")}
    assert audits[0].correlation_id == outcome.registration_a.correlation_id


def test_no_canary_in_clear_on_any_topic_records_wrote(outcome: Outcome) -> None:
    seen = 0
    for tail in outcome.tails.values():
        for record in tail.records:
            seen += 1
            raw = (record.value or b"") + (record.key or b"")
            raw += b"".join(v for _, v in record.headers)
            for canary in CANARIES:
                assert canary.encode() not in raw
    assert seen >= 8
