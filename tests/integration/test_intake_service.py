"""The intake service, in process, against the real Kafka and PostgreSQL with its own credentials.

A clinic app (principal `clinic-app`) publishes sealed submissions through `IntakeClient` and raw
garbage; intake (principal `intake`, its own consumer group for the test, positioned at the end
of the topic so it handles only this test's submissions) must forward every valid one sealed to
records, answer every invalid one on `intake.rejected.v1` with its reason and the submission's
`event_id`, write nothing new for a repeated `event_id` (also after a restart), and put no canary
personal data in clear on any topic. Customer numbers and event ids are unique per run, and the
readers keep only this run's records (by key or submission id), since the topics are shared.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from faststream import TestApp

from contracts.client import IntakeClient
from contracts.intake import SubmissionRejected
from contracts.sealing import TopicKey, load_public_key, seal, unseal
from contracts.topics import topic
from services.common.db import open_pool
from services.common.migrate import migrate
from services.common.outbox import OutboxError
from services.intake.app import build
from services.intake.handlers import Intake
from services.intake.hetu import build_hetu
from services.intake.repository import OutboxRow, PostgresIntakeRepository, PostgresIntakeUnit
from services.intake.settings import IntakeSettings
from tests.support.infra import Infra, find_infra

if TYPE_CHECKING:
    from services.common.db import Pool

pytestmark = pytest.mark.real

SUBMISSIONS = "intake.submissions.v1"
COMMANDS = "records.commands.v1"
REJECTIONS = "intake.rejected.v1"
DLQ = "intake.submissions.v1.dlq"
TOO_LARGE = 1_000_100
"""Over intake's 1 MB limit, under Kafka's default `max.message.bytes` (1,048,588)."""

RUN = secrets.token_hex(4)
CANARY_GIVEN = f"Canarygiven{RUN}"
CANARY_FAMILY = f"Canaryfamily{RUN}"
CANARY_EMAIL = f"canary.{RUN}@example.com"
CANARY_HETU = build_hetu(date(1985, 7, 23), 900 + secrets.randbelow(100), "-")
CANARIES = (CANARY_GIVEN, CANARY_FAMILY, CANARY_EMAIL, CANARY_HETU)


@pytest.fixture(scope="module")
def infra() -> Infra:
    return find_infra()


def settings_for(infra: Infra, group_suffix: str) -> IntakeSettings:
    """Intake's own settings (`INTAKE_*` of the provisioned environment), its own test group."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in infra.service_env("intake").items():
            env.setenv(name, value)
        return IntakeSettings(
            consumer_group_suffix=group_suffix,
            health_port=0,
            batch_max_records=100,
            max_retries=2,
            retry_backoff_ms=50,
        )


async def start_group_at_end(infra: Infra, group: str) -> None:
    """Commit the end of every partition for `group`, so intake skips older submissions."""
    consumer = AIOKafkaConsumer(
        **infra.kafka_client_args("intake"), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(SUBMISSIONS, p) for p in range(topic(SUBMISSIONS).partitions)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.commit(dict(ends))
    finally:
        await consumer.stop()


class Tail:
    """A group-less reader of one topic from its end at creation; keeps what it has read."""

    def __init__(self, infra: Infra, principal: str, name: str) -> None:
        self.consumer = AIOKafkaConsumer(
            **infra.kafka_client_args(principal), group_id=None, enable_auto_commit=False
        )
        self.name = name
        self.records: list[ConsumerRecord[bytes, bytes]] = []

    async def start(self) -> None:
        await self.consumer.start()
        partitions = [TopicPartition(self.name, p) for p in range(topic(self.name).partitions)]
        self.consumer.assign(partitions)
        for tp, end in (await self.consumer.end_offsets(partitions)).items():
            self.consumer.seek(tp, end)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def read(self, seconds: float = 0.3) -> None:
        batches = await self.consumer.getmany(timeout_ms=int(seconds * 1000))
        for records in batches.values():
            self.records.extend(records)

    async def until(self, done: Callable[[], bool], within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while not done() and time.monotonic() < deadline:
            await self.read()


@asynccontextmanager
async def tails(infra: Infra) -> AsyncIterator[dict[str, Tail]]:
    readers = {
        COMMANDS: Tail(infra, "records", COMMANDS),
        REJECTIONS: Tail(infra, "clinic-app", REJECTIONS),
        SUBMISSIONS: Tail(infra, "intake", SUBMISSIONS),
    }
    for reader in readers.values():
        await reader.start()
    try:
        yield readers
    finally:
        for reader in readers.values():
            await reader.stop()


@asynccontextmanager
async def running_intake(settings: IntakeSettings) -> AsyncIterator[Intake]:
    app, ctx = build(settings)
    async with TestApp(app):
        intake = ctx.extras["intake"]
        assert isinstance(intake, Intake)
        yield intake


@asynccontextmanager
async def clinic_app(infra: Infra) -> AsyncIterator[tuple[IntakeClient, AIOKafkaProducer]]:
    client = IntakeClient(
        bootstrap_servers=infra.kafka_bootstrap,
        username="clinic-app",
        password=infra.kafka_password("clinic-app"),
        intake_public_key=infra.env["REKISTERI_INTAKE_PUBLIC_KEY"],
        producer_name="reception-desk",
    )
    raw = AIOKafkaProducer(**infra.kafka_client_args("clinic-app"), enable_idempotence=True)
    await raw.start()
    try:
        async with client:
            yield client, raw
    finally:
        await raw.stop()


# --- Submissions ---------------------------------------------------------------------------------


def customer(n: int) -> str:
    return f"T{RUN}-{n}"


def registration(customer_id: str, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": "CustomerRegistered",
        "occurred_at": datetime.now(UTC).isoformat(),
        "customer_id": customer_id,
        "demographics": {
            "name": {"given_names": CANARY_GIVEN, "family_name": CANARY_FAMILY},
            "hetu": CANARY_HETU,
        },
        "contact": {"phones": ["040 123 4567"], "emails": [CANARY_EMAIL]},
        "preferred_language": "fi",
        "privacy_notice_version": "2026.1",
    }
    return doc | overrides


def with_hetu(hetu: str) -> dict[str, Any]:
    return {"name": {"given_names": CANARY_GIVEN, "family_name": CANARY_FAMILY}, "hetu": hetu}


def bad_check_character(hetu: str) -> str:
    alphabet = "0123456789ABCDEFHJKLMNPRSTUVWXY"
    return hetu[:-1] + alphabet[(alphabet.index(hetu[-1]) + 1) % len(alphabet)]


def envelope(customer_id: str | None, event_type: str = "FeedbackGiven") -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": event_type,
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "producer": "reception-desk",
    }
    if customer_id is not None:
        doc["customer_id"] = customer_id
    return doc


def assert_no_canary(records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
    for r in records:
        blobs = [r.value or b"", r.key or b"", *(v for _, v in r.headers)]
        for canary in CANARIES:
            assert not any(canary.encode() in blob for blob in blobs), (r.topic, r.offset)


def rejections_by_submission(tail: Tail) -> dict[UUID | None, list[SubmissionRejected]]:
    found: dict[UUID | None, list[SubmissionRejected]] = {}
    for r in tail.records:
        event = SubmissionRejected.model_validate_json(r.value or b"")
        found.setdefault(event.submission_event_id, []).append(event)
    return found


def commands_by_id(tail: Tail) -> dict[str, list[ConsumerRecord[bytes, bytes]]]:
    found: dict[str, list[ConsumerRecord[bytes, bytes]]] = {}
    for r in tail.records:
        found.setdefault(json.loads(r.value or b"{}").get("event_id"), []).append(r)
    return found


# --- The test ------------------------------------------------------------------------------------


@dataclass
class Submitted:
    """What this run submitted, and what intake must answer."""

    valid: dict[UUID, dict[str, Any]] = field(default_factory=dict)
    invalid: dict[UUID | None, tuple[str, str | None]] = field(default_factory=dict)
    """Submission id -> (first reason code, rejection key)."""
    sealed_bad: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    """Reason codes of the submissions whose event id cannot be read (keyed `customer(26)`)."""


async def submit_first_round(
    client: IntakeClient, raw: AIOKafkaProducer, intake_public: X25519PublicKey
) -> Submitted:
    run = Submitted()
    for n in range(10):
        doc = registration(customer(n))
        run.valid[await client.submit(doc)] = doc
    for n in range(3):
        doc = envelope(customer(n), "ContactDetailsChanged") | {
            "contact": {"emails": [CANARY_EMAIL]}
        }
        run.valid[await client.submit(doc)] = doc
    doc = envelope(customer(4), "FeedbackGiven") | {"text": "Kiitos!"}
    run.valid[await client.submit(doc)] = doc

    sealed_bad = {
        "unknown_type": registration(customer(20), type="CustomerDeleted"),
        "unknown_schema_version": registration(customer(21), schema_version=2),
        "hetu_checksum": registration(
            customer(22), demographics=with_hetu(bad_check_character(CANARY_HETU))
        ),
        "hetu_format": registration(
            customer(23), demographics=with_hetu(CANARY_HETU.replace("-", "Q"))
        ),
        "not_supported_yet": envelope(customer(24), "PhotoUploaded")
        | {
            "upload_id": str(uuid.uuid4()),
            "view": "front",
            "sha256": "ab" * 32,
            "size_bytes": 123_456,
        },
    }
    for code, doc in sealed_bad.items():
        run.invalid[await client.submit(doc)] = (code, doc["customer_id"])
        run.sealed_bad.append(doc)

    # Raw bytes, never with personal data in clear.
    no_customer = envelope(None)
    wire = seal(no_customer | {"text": "Kiitos!"}, intake_public)
    await raw.send_and_wait(SUBMISSIONS, json.dumps(wire).encode())
    run.invalid[UUID(no_customer["event_id"])] = ("missing_customer_id", None)
    in_clear = envelope(customer(25)) | {"text": "Ei sinetöity"}
    await raw.send_and_wait(SUBMISSIONS, json.dumps(in_clear).encode(), key=customer(25).encode())
    run.invalid[UUID(in_clear["event_id"])] = ("not_sealed", customer(25))
    for value, code in (
        (b"{not json", "not_json"),
        (b'{"type": "\xff\xfe"}', "not_utf8"),
        (b"x" * TOO_LARGE, "too_large"),
    ):
        await raw.send_and_wait(SUBMISSIONS, value, key=customer(26).encode())
        run.unreadable.append(code)
    return run


def unreadable_rejections(found: dict[UUID | None, list[SubmissionRejected]]) -> list[str]:
    return sorted(e.reasons[0].code for e in found.get(None, []) if e.customer_id == customer(26))


def everything_arrived(run: Submitted, tail: dict[str, Tail]) -> bool:
    commands = commands_by_id(tail[COMMANDS])
    found = rejections_by_submission(tail[REJECTIONS])
    return (
        all(str(i) in commands for i in run.valid)
        and all(i in found for i in run.invalid)
        and unreadable_rejections(found) == sorted(run.unreadable)
    )


async def submit_repeats_after_restart(
    client: IntakeClient, run: Submitted, restarted: Intake, tail: dict[str, Tail]
) -> None:
    repeats = [*list(run.valid.values())[:5], *run.sealed_bad]
    for doc in repeats:
        await client.submit(doc)
    last = registration(customer(30))
    run.valid[await client.submit(last)] = last
    await tail[COMMANDS].until(lambda: str(last["event_id"]) in commands_by_id(tail[COMMANDS]))
    deadline = time.monotonic() + 30
    while restarted.counts["duplicates"] < len(repeats):
        assert time.monotonic() < deadline, restarted.counts
        await asyncio.sleep(0.1)
    for reader in (tail[COMMANDS], tail[REJECTIONS]):
        await reader.read(2.0)  # anything a repeat wrongly produced is here by now
    assert restarted.counts == {
        "accepted": 1,
        "rejected": 0,
        "duplicates": len(repeats),
        "dead_lettered": 0,
    }


def check_commands(run: Submitted, tail: Tail, records_key: TopicKey) -> None:
    """Exactly one command per valid submission, sealed to records, normalised, in order."""
    commands = commands_by_id(tail)
    for event_id, doc in run.valid.items():
        [record] = commands[str(event_id)]
        assert record.key == doc["customer_id"].encode()
        wire = json.loads(record.value or b"")
        assert wire["producer"] == "intake"
        command = unseal(wire, records_key)
        assert command["type"] == doc["type"]
        if doc["type"] == "CustomerRegistered":
            assert command["demographics"]["hetu"] == CANARY_HETU
            assert command["demographics"]["date_of_birth"] == "1985-07-23"
            assert command["contact"]["phones"] == ["+358401234567"]
    ours = [r for r in tail.records if (r.key or b"").startswith(f"T{RUN}-".encode())]
    assert len(ours) == len(run.valid)
    order = [str(i) for i in run.valid]
    by_customer: dict[bytes, list[int]] = {}
    for r in ours:
        position = order.index(json.loads(r.value or b"")["event_id"])
        by_customer.setdefault(r.key or b"", []).append(position)
    assert all(positions == sorted(positions) for positions in by_customer.values())


def check_rejections(run: Submitted, tail: Tail) -> None:
    """Exactly one rejection per invalid submission: its reason, its event id and key."""
    found = rejections_by_submission(tail)
    for event_id, (code, key) in run.invalid.items():
        [event] = found[event_id]
        assert event.reasons[0].code == code, (code, event.reasons)
        assert event.customer_id == key
        assert event.producer == "intake"
    assert unreadable_rejections(found) == sorted(run.unreadable)
    for r in tail.records:
        event = SubmissionRejected.model_validate_json(r.value or b"")
        if event.submission_event_id in run.invalid:
            assert r.key == (event.customer_id.encode() if event.customer_id else None)


async def check_database(infra: Infra, run: Submitted) -> None:
    """The inbox holds every readable submission id; the relay emptied the outbox of them."""
    conn = await asyncpg.connect(infra.pg_dsn("intake"), server_settings={"search_path": "intake"})
    try:
        ids = [*run.valid, *(i for i in run.invalid if i is not None)]
        claimed = await conn.fetchval(CLAIMED_SQL, ids)
        assert claimed == len(ids)
        assert await conn.fetchval(LEFT_SQL, f"T{RUN}-%") == 0
    finally:
        await conn.close()


CLAIMED_SQL = "SELECT count(*) FROM inbox WHERE consumer = 'intake' AND event_id = ANY($1::uuid[])"
LEFT_SQL = "SELECT count(*) FROM outbox WHERE key LIKE $1"


async def test_intake_routes_rejects_deduplicates_and_leaks_nothing(infra: Infra) -> None:
    suffix = f"test-{uuid.uuid4().hex[:12]}"
    settings = settings_for(infra, suffix)
    await start_group_at_end(infra, f"intake.{suffix}")
    records_key = TopicKey.from_b64(json.loads(infra.env["RECORDS_TOPIC_KEYS"])[COMMANDS])
    intake_public = load_public_key(infra.env["REKISTERI_INTAKE_PUBLIC_KEY"])

    async with tails(infra) as tail, clinic_app(infra) as (client, raw):
        async with running_intake(settings) as intake:
            run = await submit_first_round(client, raw, intake_public)
            await asyncio.gather(
                *(
                    tail[name].until(lambda: everything_arrived(run, tail))
                    for name in (COMMANDS, REJECTIONS)
                )
            )
            assert everything_arrived(run, tail), intake.counts
            assert intake.counts["dead_lettered"] == 0

        # Restarted with the same group: every repeat is a no-op, a new submission still flows.
        async with running_intake(settings) as restarted:
            await submit_repeats_after_restart(client, run, restarted, tail)
        await tail[SUBMISSIONS].read(2.0)

    check_commands(run, tail[COMMANDS], records_key)
    check_rejections(run, tail[REJECTIONS])
    # No canary in clear on anything written during the test, by intake or by the clinic app.
    for reader in tail.values():
        assert_no_canary(reader.records)
    assert any(r.key == customer(0).encode() for r in tail[SUBMISSIONS].records)
    await check_database(infra, run)


# --- The repository on PostgreSQL (an isolated schema, no Kafka) ---------------------------------


@pytest.fixture
async def schema_pool(infra: Infra) -> AsyncIterator[tuple[str, Pool]]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(infra.pg_admin_dsn)
    try:
        await admin.execute(f"CREATE SCHEMA {name} AUTHORIZATION svc_intake")
        pool = await open_pool(infra.pg_dsn("intake"), schema=name, max_size=3)
        try:
            await migrate(pool, schema=name, directory=None)
            yield name, pool
        finally:
            await pool.close()
    finally:
        await admin.execute(f"DROP SCHEMA {name} CASCADE")
        await admin.close()


class _Pool:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool


class Rollback(Exception):  # noqa: N818 - a control-flow signal, not an error
    pass


def row(n: int, key: str | None = "C-1") -> OutboxRow:
    return OutboxRow(
        event_id=uuid.uuid4(),
        topic=COMMANDS,
        key=key,
        payload=f"payload-{n}".encode(),
        event_type="FeedbackGiven",
        correlation_id=uuid.uuid4(),
    )


async def test_repository_claims_once_and_keeps_row_order(schema_pool: tuple[str, Pool]) -> None:
    name, pool = schema_pool
    repo = PostgresIntakeRepository(_Pool(pool))
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    rows = [row(n, key=None if n == 3 else f"C-{n % 2}") for n in range(6)]
    notified: list[str] = []

    def on_notify(*args: Any) -> None:
        notified.append(args[2])

    async with pool.acquire() as listener:
        await listener.add_listener(f"{name}_outbox", on_notify)
        async with repo.transaction() as unit:
            assert await unit.claim([a, b, a]) == {a, b}
            await unit.enqueue(rows)
            assert await unit.claim([]) == set()
            await unit.enqueue([])
        async with repo.transaction() as unit:
            assert await unit.claim([a, c]) == {c}
        await asyncio.sleep(0.2)
        await listener.remove_listener(f"{name}_outbox", on_notify)
    assert notified == [f"{name}_outbox"]
    async with pool.acquire() as conn:
        stored = await conn.fetch(
            "SELECT event_id, topic, key, headers, payload, event_type, aggregate_type"
            " FROM outbox ORDER BY position"
        )
    assert [r["event_id"] for r in stored] == [r.event_id for r in rows]
    assert [r["key"] for r in stored] == [r.key for r in rows]
    assert [bytes(r["payload"]) for r in stored] == [r.payload for r in rows]
    assert stored[0]["headers"] == json.loads(rows[0].headers_json())
    assert {(r["topic"], r["event_type"], r["aggregate_type"]) for r in stored} == {
        (COMMANDS, "FeedbackGiven", "customer")
    }


async def test_repository_rolls_back_claims_and_rows_together(
    schema_pool: tuple[str, Pool],
) -> None:
    _, pool = schema_pool
    repo = PostgresIntakeRepository(_Pool(pool))
    event_id = uuid.uuid4()

    async def claim_write_and_fail() -> None:
        async with repo.transaction() as unit:
            assert await unit.claim([event_id]) == {event_id}
            await unit.enqueue([row(1)])
            raise Rollback

    with pytest.raises(Rollback):
        await claim_write_and_fail()
    async with repo.transaction() as unit:
        assert await unit.claim([event_id]) == {event_id}
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
        with pytest.raises(OutboxError):
            await PostgresIntakeUnit(conn).enqueue([row(2)])
